"""Adaptive supercells and random substitution of dopants on host sites.

The supercell is chosen so that one substituted site is a small, fixed fraction of the cell
(≈ 0.2 % at 433–500 atoms) and the cell is as compact as possible (largest distance between
periodic images), which keeps a dopant from seeing its own image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.build import make_supercell

from defectnet.datagen.recommender import Candidate
from defectnet.errors import UserError


class SupercellRangeError(ValueError):
    """No supercell of the parent has a number of atoms inside the requested range."""


def _widths(cell: np.ndarray) -> list[float]:
    """Distances between opposite faces: how far a site is from its nearest periodic images."""
    vol = abs(np.linalg.det(cell))
    return [vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]


def _compactness(cell: np.ndarray) -> float:
    """Smallest distance between opposite faces over the cube root of the volume (1 = cube)."""
    return min(_widths(cell)) / abs(np.linalg.det(cell)) ** (1 / 3)


def _conventional(atoms: Atoms) -> Atoms:
    import spglib

    lattice, positions, numbers = spglib.standardize_cell(
        (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers),
        to_primitive=False,
        no_idealize=True,
        symprec=1e-3,
    )
    return Atoms(numbers=numbers, cell=lattice, scaled_positions=positions, pbc=True)


def _factor_triples(low: int, high: int):
    """All (n1, n2, n3) of positive integers whose product lies in [low, high]."""
    for n1 in range(1, high + 1):
        for n2 in range(1, high // n1 + 1):
            for n3 in range(max(1, math.ceil(low / (n1 * n2))), high // (n1 * n2) + 1):
                yield n1, n2, n3


def _diagonal_multiples(atoms: Atoms, min_atoms: int, max_atoms: int):
    """(matrix, number of atoms) of every diagonal multiple of ``atoms`` and of its
    conventional cell with ``min_atoms`` to ``max_atoms`` atoms."""
    bases = [np.eye(3, dtype=int)]
    conv = _conventional(atoms)
    if len(conv) != len(atoms):
        exact = np.linalg.solve(atoms.cell[:].T, conv.cell[:].T).T
        to_conv = np.rint(exact).astype(int)
        # only a conventional cell that is a supercell of the given one (not a smaller cell
        # hidden in an already repeated one) can serve as a base
        if np.allclose(exact, to_conv, atol=1e-3) and round(abs(np.linalg.det(to_conv))) >= 1:
            bases.append(to_conv)
    for base_matrix in bases:
        n_base = len(atoms) * round(abs(np.linalg.det(base_matrix)))
        for n in _factor_triples(math.ceil(min_atoms / n_base), max_atoms // n_base):
            yield np.diag(n) @ base_matrix, n_base * math.prod(n)


def choose_supercell(
    atoms: Atoms, min_atoms: int, max_atoms: int, *, where: str = "parent"
) -> tuple[np.ndarray, Atoms]:
    """Integer matrix P (rows multiply ``atoms.cell``) and the supercell, most compact first.

    Diagonal multiples of the given cell and of its conventional cell are searched; among
    those inside ``[min_atoms, max_atoms]`` the most compact wins, then the smallest.
    """
    if min_atoms > max_atoms or max_atoms < 1:
        raise SupercellRangeError(
            f"supercell range [{min_atoms}, {max_atoms}] is empty; "
            "set supercell.min_atoms ≤ supercell.max_atoms."
        )
    best = None
    for matrix, count in _diagonal_multiples(atoms, min_atoms, max_atoms):
        score = (-round(_compactness(matrix @ atoms.cell[:]), 6), count)
        if best is None or score < best[0]:
            best = (score, matrix)
    if best is None:
        raise SupercellRangeError(
            f"{where}: no supercell of the {len(atoms)}-atom cell has between {min_atoms} and "
            f"{max_atoms} atoms; widen supercell.min_atoms / supercell.max_atoms."
        )
    matrix = best[1]
    return matrix, make_supercell(atoms, matrix, order="cell-major")


def _keeps_rotations(rotations: np.ndarray, matrix: np.ndarray) -> bool:
    """Whether every rotation (fractional, of the cell) maps the supercell ``matrix`` onto
    itself."""
    lattice = np.asarray(matrix, dtype=np.float64).T  # supercell vectors in the cell's basis
    inverse = np.linalg.inv(lattice)
    return all(np.allclose(k := inverse @ r @ lattice, np.rint(k), atol=1e-6) for r in rotations)


def symmetric_supercell(
    atoms: Atoms, min_atoms: int, max_atoms: int, min_width: float
) -> tuple[np.ndarray, Atoms] | None:
    """The smallest supercell of ``min_atoms`` to ``max_atoms`` atoms that keeps the crystal's
    point group and puts periodic images at least ``min_width`` apart (then the most compact);
    None if there is none. In such a cell a substituted site keeps its whole site symmetry (its
    periodic images sit symmetrically), so a patch's displacements reduce by it."""
    import spglib

    rotations = np.unique(
        spglib.get_symmetry(
            (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers), symprec=1e-3
        )["rotations"],
        axis=0,
    )
    best = None
    for matrix, count in _diagonal_multiples(atoms, min_atoms, max_atoms):
        cell = matrix @ atoms.cell[:]
        if min(_widths(cell)) < min_width - 1e-6 or not _keeps_rotations(rotations, matrix):
            continue
        score = (count, -round(_compactness(cell), 6))
        if best is None or score < best[0]:
            best = (score, matrix)
    if best is None:
        return None
    return best[1], make_supercell(atoms, best[1], order="cell-major")


def image_distance(cell: Atoms) -> float:
    """The smallest distance between opposite faces of ``cell`` (Å)."""
    return min(_widths(cell.cell[:]))


@dataclass
class Substitution:
    """The doped cell and what was put in it (counts are atoms, concentrations fractions)."""

    atoms: Atoms
    counts: dict[str, int]
    sites: dict[str, list[int]]
    distractors: list[str]
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def concentrations(self) -> dict[str, float]:
        n = len(self.atoms)
        return {el: c / n for el, c in self.counts.items()}


def _log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    if high <= low:
        return low
    return int(min(high, math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1))))))


def _uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    return low if high <= low else int(rng.integers(low, high + 1))


SITE_COUNTS = {"log_uniform": _log_uniform_int, "uniform": _uniform_int}


def substitute(
    supercell: Atoms,
    candidates: Sequence[Candidate],
    rng: np.random.Generator,
    n_dopants: Sequence[int] = (1, 6),
    concentration: Sequence[float] = (0.002, 0.25),
    n_distractors: Sequence[int] = (0, 3),
    max_total: float = 0.5,
    site_counts: str = "log_uniform",
    undoped_fraction: float = 0.0,
) -> Substitution:
    """Put 1…k distinct dopants on random sites of the host elements they replace.

    The number of sites per dopant is drawn log-uniformly by default so that dilute (one site)
    and concentrated (up to ``concentration[1]``) samples are both common; ``site_counts=
    "uniform"`` draws it uniformly instead (an alloy series such as Si(1-x)Ge(x)). Candidates
    not used become distractors: offered to the model, truly absent. All dopants together take
    at most ``max_total`` of the sites, so the host stays the host. A share ``undoped_fraction``
    of the samples holds no dopant at all and offers 1…max(n_distractors, n_dopants) candidates,
    every one a distractor: the answer "nothing here" is learned too.
    """
    if site_counts not in SITE_COUNTS:
        raise UserError(
            f"sampling.site_counts='{site_counts}': choose one of {sorted(SITE_COUNTS)}."
        )
    draw_sites = SITE_COUNTS[site_counts]
    by_dopant: dict[str, Candidate] = {}
    for c in candidates:
        by_dopant.setdefault(c.dopant, c)
    if not by_dopant:
        raise ValueError("substitute: no dopant candidates were given for this host.")
    n_atoms = len(supercell)
    lo, hi = n_dopants
    undoped = undoped_fraction > 0 and rng.random() < undoped_fraction
    k = (
        0
        if undoped
        else int(rng.integers(lo, min(hi, len(by_dopant)) + 1))
        if len(by_dopant) >= lo
        else len(by_dopant)
    )
    names = list(by_dopant)
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=k, replace=False))]
    symbols = supercell.get_chemical_symbols()
    free = {s: [i for i, x in enumerate(symbols) if x == s] for s in set(symbols)}
    min_sites = max(1, math.ceil(concentration[0] * n_atoms - 1e-9))
    max_sites = max(min_sites, math.floor(concentration[1] * n_atoms + 1e-9))
    budget = max(1, math.floor(max_total * n_atoms + 1e-9))
    counts, sites = {}, {}
    for dopant in chosen:
        pool = free[by_dopant[dopant].replaces]
        if not pool or budget <= 0:
            continue
        n = min(draw_sites(rng, min_sites, max_sites), len(pool), budget)
        budget -= n
        picked = sorted(rng.choice(pool, size=n, replace=False).tolist())
        for i in picked:
            symbols[i] = dopant
        free[by_dopant[dopant].replaces] = [i for i in pool if i not in set(picked)]
        counts[dopant], sites[dopant] = n, picked
    unused = [d for d in names if d not in counts]
    if undoped:
        n_dis = int(rng.integers(1, max(n_distractors[1], hi) + 1))
    else:
        n_dis = int(rng.integers(n_distractors[0], n_distractors[1] + 1))
    distractors = (
        [
            unused[i]
            for i in sorted(rng.choice(len(unused), size=min(n_dis, len(unused)), replace=False))
        ]
        if unused
        else []
    )
    doped = supercell.copy()
    doped.set_chemical_symbols(symbols)
    offered = [by_dopant[d] for d in names if d in counts or d in distractors]
    return Substitution(doped, counts, sites, distractors, offered)
