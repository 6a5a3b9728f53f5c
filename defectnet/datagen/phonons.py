"""Phonon modes of doped supercells by finite displacements (phonopy).

Two methods behind one interface, chosen by the ``phonons`` config group:

- ``FiniteDisplacement`` (``full``): every symmetry-distinct displacement of the doped cell is
  evaluated with the force field. The reference.
- ``EmbeddedForceConstants`` (``embedded``): the pristine supercell's force constants are
  computed once per parent (a handful of symmetry-reduced displacements) and only the atoms
  within ``cutoff`` of a dopant are displaced in the doped cell; their rows and columns replace
  the pristine ones, then the acoustic sum rule and index symmetry are restored. A dopant at
  0.2–25 % perturbs the force constants only near itself, so this costs a few percent of
  ``full`` for the same spectrum (``scripts/bench_phonons.py`` measures both).
- ``SuperposedForceConstants`` (``superposed``): a per-host library of defect patches
  (``defect_library``), computed once per (dopant, kind of site) in a dilute cell, summed onto
  the pristine force constants of each doped cell: no force call and no relaxation per sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units

from defectnet.datagen.calculators import ForceField
from defectnet.datagen.defect_library import atoms_near
from defectnet.errors import UserError
from defectnet.spectra import THZ_TO_MEV

log = logging.getLogger(__name__)
# phonons.uniform_strain: a superposed patch as its clamped dilute cell gave it; with the cell's
# uniform strain removed; removed and each sample given its own clamped cell's; or each patch
# without the strain its host holds beyond the cutoff and each sample given the uniform strain
# of its host at zero pressure (a free crystal's; datagen/defect_library.py)
UNIFORM_STRAIN = ("kept", "removed", "sample", "free")
MAX_DILUTE_ATOMS = 1024  # the largest dilute cell `free` grows a patch's cell to
# phonons.plusminus: phonopy's choices (each step with its opposite; one-sided; ``auto``: the
# opposite only where symmetry does not supply it) and ``corrected``: a doped cell's steps
# one-sided, less the pristine crystal's one-sided error of the same step (``OneSidedError``);
# the pristine crystal's own steps as ``auto``
PLUSMINUS = ("auto", True, False, "corrected")


@dataclass
class Modes:
    """Phonon energies (meV) over a q-mesh with their weights, and what they cost."""

    energies_mev: np.ndarray  # [n_q * n_bands]
    weights: np.ndarray  # same length, sums to n_bands
    n_displacements: int
    n_atoms: int
    # per element, each mode's share of the eigenvector norm (for neutron weighting)
    element_projections: dict[str, np.ndarray] | None = None

    @property
    def min_energy(self) -> float:
        """Lowest mode energy; imaginary modes are negative."""
        return float(self.energies_mev.min())

    def imaginary_fraction(self, tolerance_mev: float) -> float:
        return float(self.weights[self.energies_mev < -tolerance_mev].sum() / self.weights.sum())


def to_phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell[:],
        scaled_positions=atoms.get_scaled_positions(),
        masses=atoms.get_masses(),
    )


def from_phonopy_atoms(patoms) -> Atoms:
    return Atoms(
        symbols=patoms.symbols, cell=patoms.cell, scaled_positions=patoms.scaled_positions, pbc=True
    )


class FiniteDisplacement:
    """Full finite-displacement phonons of ``unitcell`` in the supercell ``matrix``.

    ``mesh`` is phonopy's length-based q-mesh (Å): the same value samples a primitive cell and
    a 500-atom supercell to the same density in reciprocal space.
    """

    name = "full"
    relaxes_samples = True  # each doped cell is relaxed before its phonons
    knows_pristine = False  # whether doped cells are made against pristine force constants

    def __init__(
        self,
        displacement: float = 0.03,
        plusminus: str | bool = "auto",
        mesh: float = 30.0,
        symprec: float = 1e-4,
        symmetrize_fc: bool = True,
    ):
        if plusminus not in PLUSMINUS:
            raise UserError(
                f"phonons.plusminus={plusminus!r}: choose auto, true, false or corrected."
            )
        if plusminus == "corrected" and not self.knows_pristine:
            raise UserError(
                f"phonons.plusminus=corrected subtracts the pristine crystal's one-sided error, "
                f"which phonons={self.name} does not compute: use it with embedded or superposed."
            )
        self.displacement = displacement
        self.plusminus = plusminus
        self.mesh = mesh
        self.symprec = symprec
        self.symmetrize_fc = symmetrize_fc
        self.projections = False  # set when spectra are neutron-weighted (needs eigenvectors)

    def settings(self) -> dict:
        return {
            "method": self.name,
            "displacement": self.displacement,
            "plusminus": self.plusminus,
            "mesh": self.mesh,
            "symprec": self.symprec,
            "symmetrize_fc": self.symmetrize_fc,
        }

    def settings_kwargs(self) -> dict:
        """This method's finite-displacement settings as constructor arguments."""
        return {k: v for k, v in FiniteDisplacement.settings(self).items() if k != "method"}

    def phonopy(self, unitcell: Atoms, matrix: np.ndarray, forcefield: ForceField):
        """A ``Phonopy`` object with force constants computed from displaced supercells."""
        from phonopy import Phonopy

        phonon = Phonopy(
            to_phonopy_atoms(unitcell),
            supercell_matrix=np.asarray(matrix),
            primitive_matrix=np.eye(3),
            symprec=self.symprec,
        )
        phonon.generate_displacements(distance=self.displacement, is_plusminus=self.pristine_steps)
        cells = [from_phonopy_atoms(c) for c in phonon.supercells_with_displacements]
        if self.pristine_steps is not True:
            # a step without its opposite (all of them one-sided, or under ``auto`` those whose
            # opposite symmetry supplies): forces relative to the undisplaced cell, whose
            # residual forces after relaxation would otherwise enter every difference
            *forces, residual = forcefield.forces([*cells, from_phonopy_atoms(phonon.supercell)])
            phonon.forces = np.array(forces) - residual
        else:
            phonon.forces = np.array(forcefield.forces(cells))
        phonon.produce_force_constants()
        if self.symmetrize_fc:
            phonon.symmetrize_force_constants()  # acoustic sum rule + index symmetry
        return phonon

    @property
    def pristine_steps(self) -> str | bool:
        """phonopy's ``is_plusminus`` for a cell computed whole (a pristine one under
        ``corrected``, which has no pristine crystal of its own to correct against)."""
        return "auto" if self.plusminus == "corrected" else self.plusminus

    def n_calls(self, phonon) -> int:
        """Force calls ``phonopy`` spent: the displaced cells and, for one-sided steps, the
        undisplaced one."""
        return len(phonon.displacements) + (self.pristine_steps is not True)

    def modes(self, unitcell: Atoms, matrix: np.ndarray, forcefield: ForceField) -> Modes:
        phonon = self.phonopy(unitcell, matrix, forcefield)
        return mesh_modes(
            phonon,
            self.mesh,
            n_displacements=self.n_calls(phonon),
            projections=self.projections,
        )

    def host_reference(
        self, pristine: Atoms, forcefield: ForceField, **_
    ) -> HostForceConstants | None:
        """What the method needs from the pristine supercell, once per parent: nothing here."""
        return None

    def doped_modes(
        self, doped: Atoms, reference: HostForceConstants | None, forcefield: ForceField
    ) -> Modes:
        """Modes of a relaxed doped supercell (same atom order as the pristine one)."""
        return self.modes(doped, np.eye(3, dtype=int), forcefield)


@dataclass
class HostForceConstants:
    """The pristine supercell's force constants: the background a doped cell is embedded in."""

    numbers: np.ndarray  # [N] atomic numbers of the pristine supercell
    force_constants: np.ndarray  # [N, N, 3, 3] eV/Å²
    n_displacements: int
    pristine: Atoms | None = None  # the cell itself (for ``plusminus: corrected``)
    one_sided: OneSidedError | None = field(default=None, repr=False)

    def one_sided_error(self, symprec: float) -> OneSidedError:
        """The pristine cell's one-sided errors, computed as steps ask for them and kept."""
        if self.pristine is None:
            raise ValueError("plusminus=corrected needs the pristine cell beside its constants")
        if self.one_sided is None:
            self.one_sided = OneSidedError(self.pristine, self.force_constants, symprec)
        return self.one_sided


class OneSidedError:
    """What a one-sided step u of atom i gives beyond the harmonic forces −Φu in the pristine
    cell: b(i, u), second order in u, which central steps cancel. A lattice translation that
    maps atom i onto j maps b(i, u) onto b(j, u), so one force call per (translation orbit, u)
    gives it for every atom; subtracted from a doped cell's one-sided step it leaves ΔΦ and the
    dopant's own change of b (``scripts/bench_forward_patches.py``: central's ΔΦ at half the
    calls on low-symmetry sites)."""

    def __init__(self, pristine: Atoms, force_constants: np.ndarray, symprec: float):
        self.pristine = pristine
        self.force_constants = force_constants
        self.orbit = translation_orbits(pristine, symprec)  # atom → (representative, perm)
        self.residual: np.ndarray | None = None
        self.errors: dict[tuple, np.ndarray] = {}  # (representative, u) → b [N, 3]
        self.n_calls = 0

    def of_steps(self, moves, forcefield: ForceField) -> np.ndarray:
        """b of each (atom, step) in ``moves`` [len(moves), N, 3], the missing ones computed
        in one batch of force calls."""
        keys = []
        for i, u in moves:
            rep, _ = self.orbit[i]
            keys.append((rep, tuple(np.round(u, 8))))
        new = list(dict.fromkeys(k for k in keys if k not in self.errors))
        if new:
            cells = []
            for rep, u in new:
                cell = self.pristine.copy()
                cell.positions[rep] += u
                cells.append(cell)
            first = [self.pristine] if self.residual is None else []
            result = forcefield.forces([*first, *cells])
            if first:
                self.residual = np.asarray(result[0])
            for (rep, u), forces in zip(new, result[len(first) :]):
                harmonic = -np.einsum("a,jab->jb", np.asarray(u), self.force_constants[rep])
                self.errors[(rep, u)] = np.asarray(forces) - self.residual - harmonic
            self.n_calls += len(first) + len(new)
        out = np.zeros((len(moves), len(self.pristine), 3))
        for k, ((i, _), key) in enumerate(zip(moves, keys)):
            _, perm = self.orbit[i]
            out[k][perm] = self.errors[key]
        return out


def symmetry_permutations(cell: Atoms, symprec: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each symmetry operation of ``cell`` as its rotation (fractional coordinates) and the
    permutation of the atoms it makes (atom j moves onto ``perm[j]``)."""
    import spglib

    frac = cell.get_scaled_positions()
    data = spglib.get_symmetry((cell.cell[:], frac, cell.numbers), symprec=symprec)
    out = []
    for rotation, shift in zip(data["rotations"], data["translations"], strict=True):
        diff = (frac @ rotation.T + shift)[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        out.append((rotation, np.argmin(np.linalg.norm(diff @ cell.cell[:], axis=2), axis=1)))
    return out


def translation_orbits(cell: Atoms, symprec: float) -> dict[int, tuple[int, np.ndarray]]:
    """For each atom, the first atom of its orbit under ``cell``'s pure lattice translations
    and the permutation ``perm`` of that translation (atom j moves onto ``perm[j]``;
    ``perm[representative]`` is the atom)."""
    identity = np.eye(3, dtype=int)
    perms = [p for r, p in symmetry_permutations(cell, symprec) if np.array_equal(r, identity)]
    orbit: dict[int, tuple[int, np.ndarray]] = {}
    for rep in range(len(cell)):
        if rep not in orbit:
            for perm in perms:
                orbit.setdefault(int(perm[rep]), (rep, perm))
    return orbit


def own_cell_phonopy(cell: Atoms, symprec: float):
    """A ``Phonopy`` of ``cell`` taken as its own primitive cell and supercell: a doped cell
    has no smaller repeating unit."""
    from phonopy import Phonopy

    return Phonopy(
        to_phonopy_atoms(cell),
        supercell_matrix=np.eye(3, dtype=int),
        primitive_matrix=np.eye(3),
        symprec=symprec,
    )


def near_displacement_count(
    cell: Atoms, sites, cutoff: float, symprec: float = 1e-4
) -> tuple[int, int]:
    """What an embedded calculation of dopants on ``sites`` of the pristine ``cell`` costs before
    a force call: phonopy's one-sided displacements of the atoms within ``cutoff`` of any of
    them that the doped cell's symmetry does not supply (each a force call on the whole cell),
    and the order of that cell's point group."""
    doped = cell.copy()
    for n, site in enumerate(np.atleast_1d(sites)):
        doped.numbers[site] = int(cell.numbers.max()) + 1 + n  # marks: elements not in the cell
    phonon = own_cell_phonopy(doped, symprec)
    phonon.generate_displacements(distance=0.03, is_plusminus=False)
    near = atoms_near(doped, sites, cutoff)
    order = len(np.unique(phonon.symmetry.dataset.rotations, axis=0))
    return sum(1 for d in phonon.displacements if near[d[0]]), order


class EmbeddedForceConstants(FiniteDisplacement):
    """Pristine force constants with the rows and columns near each dopant recomputed.

    The doped cell's own symmetry still reduces the displacements (phonopy), and only those of
    atoms within ``cutoff`` Å of a dopant call the force field; the others get their forces
    from the pristine force constants, so phonopy assembles one consistent set. Where a
    displacement has no opposite partner, forces are taken relative to the undisplaced doped
    cell, whose residual forces after relaxation would otherwise leak into one-sided
    differences.
    """

    name = "embedded"
    knows_pristine = True

    def __init__(self, cutoff: float = 4.5, **kwargs):
        super().__init__(**kwargs)
        if cutoff < 0:
            raise UserError(f"phonons.cutoff must be >= 0 Å, got {cutoff}.")
        self.cutoff = cutoff

    def settings(self) -> dict:
        return {**super().settings(), "cutoff": self.cutoff}

    def host_reference(self, pristine: Atoms, forcefield: ForceField, **_) -> HostForceConstants:
        phonon = self.phonopy(pristine, np.eye(3, dtype=int), forcefield)
        return HostForceConstants(
            pristine.numbers.copy(),
            np.asarray(phonon.force_constants),
            self.n_calls(phonon),
            pristine=pristine.copy(),
        )

    def near_dopants(self, doped: Atoms, reference: HostForceConstants) -> np.ndarray:
        """Mask of the atoms within ``cutoff`` of any substituted site (the sites included)."""
        if len(doped) != len(reference.numbers):
            raise ValueError(
                f"doped cell has {len(doped)} atoms, its pristine supercell "
                f"{len(reference.numbers)}: only substitutions can be embedded."
            )
        return atoms_near(doped, np.flatnonzero(doped.numbers != reference.numbers), self.cutoff)

    def phonopy_doped(
        self, doped: Atoms, reference: HostForceConstants, forcefield: ForceField
    ) -> tuple:
        """A ``Phonopy`` object of the doped cell holding the embedded force constants, and
        the number of force-field evaluations spent on it."""
        near = self.near_dopants(doped, reference)
        phonon = own_cell_phonopy(doped, self.symprec)
        corrected = self.plusminus == "corrected"
        phonon.generate_displacements(
            distance=self.displacement, is_plusminus=False if corrected else self.plusminus
        )
        moves, forces, computed, cells = near_steps(phonon, doped, near, reference.force_constants)
        # ± pairs cancel the residual forces of the relaxed cell; one-sided steps need them
        paired = all(
            any(j == i and np.allclose(v, -u) for j, v in (moves[m] for m in computed))
            for i, u in (moves[k] for k in computed)
        )
        reference_cells = [] if paired else [doped]
        n_calls = len(cells) + (len(reference_cells) if cells else 0)
        if cells:
            result = forcefield.forces([*reference_cells, *cells])
            forces[computed] = np.asarray(result[len(reference_cells) :])
            if not paired:
                forces[computed] -= result[0]
            if corrected:
                error = reference.one_sided_error(self.symprec)
                before = error.n_calls
                forces[computed] -= error.of_steps([moves[k] for k in computed], forcefield)
                n_calls += error.n_calls - before
        phonon.forces = forces
        phonon.produce_force_constants()
        fc = phonon.force_constants
        # the near atoms' computed couplings replace the pristine ones in both directions
        fc[np.ix_(~near, near)] = fc[np.ix_(near, ~near)].transpose(1, 0, 3, 2)
        phonon.force_constants = fc
        if self.symmetrize_fc:
            phonon.symmetrize_force_constants()
        return phonon, n_calls

    def doped_modes(
        self, doped: Atoms, reference: HostForceConstants | None, forcefield: ForceField
    ) -> Modes:
        if reference is None:
            raise ValueError("embedded phonons need the pristine force constants (host_reference)")
        phonon, n_calls = self.phonopy_doped(doped, reference, forcefield)
        return mesh_modes(phonon, self.mesh, n_displacements=n_calls, projections=self.projections)


def near_steps(phonon, doped: Atoms, near: np.ndarray, fc0: np.ndarray) -> tuple:
    """``phonon``'s displacements of ``doped`` as (atom, step) pairs, their forces as ``fc0``
    gives them, the indices of the steps that move a ``near`` atom (to compute with the
    potential) and those steps' displaced cells."""
    moves = [(int(d[0]), np.asarray(d[1:], dtype=np.float64)) for d in phonon.displacements]
    forces = np.stack([-np.einsum("a,jab->jb", u, fc0[i]) for i, u in moves])
    computed = [k for k, (i, _) in enumerate(moves) if near[i]]
    cells = []
    for k in computed:
        cell = doped.copy()
        cell.positions[moves[k][0]] += moves[k][1]
        cells.append(cell)
    return moves, forces, computed, cells


def mesh_modes(phonon, mesh: float, n_displacements: int, projections: bool = False) -> Modes:
    """Mode energies on phonopy's q-mesh, weighted by the q-point multiplicities; with
    ``projections``, also each element's share of every mode's eigenvector."""
    phonon.run_mesh(mesh, with_eigenvectors=projections, is_gamma_center=True)
    freqs = np.asarray(phonon.mesh.frequencies) * THZ_TO_MEV  # [n_q, n_bands]
    weights = np.repeat(
        np.asarray(phonon.mesh.weights, dtype=np.float64)[:, None], freqs.shape[1], axis=1
    )
    weights *= freqs.shape[1] / weights.sum()
    shares = None
    if projections:
        vectors = np.asarray(phonon.mesh.eigenvectors)  # [n_q, 3N, bands], columns are modes
        n_q, n_dof, n_bands = vectors.shape
        per_atom = (np.abs(vectors) ** 2).reshape(n_q, n_dof // 3, 3, n_bands).sum(axis=2)
        symbols = np.array(phonon.primitive.symbols)
        shares = {
            el: per_atom[:, symbols == el, :].sum(axis=1).ravel() for el in dict.fromkeys(symbols)
        }
    return Modes(freqs.ravel(), weights.ravel(), n_displacements, len(phonon.unitcell), shares)


def cell_mesh_modes(
    force_constants: np.ndarray,
    cell: Atoms,
    mesh: float,
    symprec: float = 1e-5,
    projections: bool = False,
) -> Modes:
    """Modes on the q-mesh of a cell taken as its own primitive cell, from force constants
    already made (a library's sum, a benchmark's rebuilt cell); no force call."""
    phonon = own_cell_phonopy(cell, symprec)
    phonon.force_constants = force_constants
    return mesh_modes(phonon, mesh, n_displacements=0, projections=projections)


# ħ·sqrt(eV / (Å² · u)) in meV: a mass-weighted force-constant eigenvalue to a mode energy
EV_A2_AMU_TO_MEV = 1e3 * units._hbar * np.sqrt(units._e / (1e-20 * units._amu)) / units._e


def gamma_modes(force_constants: np.ndarray, atoms: Atoms, projections: bool = False) -> Modes:
    """The cell's Γ-point modes from its force constants, diagonalised directly. For a cell of
    hundreds of atoms Γ already folds in a fine mesh of the host's q-points, and this is several
    times faster than phonopy's mesh; imaginary modes come out negative as phonopy's do."""
    n = len(atoms)
    inv_sqrt_m = 1 / np.sqrt(np.repeat(atoms.get_masses(), 3))
    dyn = force_constants.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    dyn = 0.5 * (dyn + dyn.T) * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    if projections:
        eig, vectors = np.linalg.eigh(dyn)
    else:
        eig, vectors = np.linalg.eigvalsh(dyn), None
    energies = np.sign(eig) * np.sqrt(np.abs(eig)) * EV_A2_AMU_TO_MEV
    shares = None
    if projections:
        per_atom = (np.abs(vectors) ** 2).reshape(n, 3, 3 * n).sum(axis=1)
        symbols = np.array(atoms.get_chemical_symbols())
        shares = {el: per_atom[symbols == el].sum(axis=0) for el in dict.fromkeys(symbols)}
    return Modes(energies, np.ones_like(energies), 0, n, shares)


class SuperposedForceConstants(FiniteDisplacement):
    """Doped cells from a per-host library of defect patches: no force call per sample.

    Once per parent (``host_reference``): the pristine force constants of the doped samples'
    supercell (symmetry-reduced displacements), and for every candidate dopant and kind of site
    a patch from a dilute cell of ``patch_atoms`` atoms (``defect_library``). Per sample: the
    patches summed onto the pristine force constants; the sample is not relaxed (the patches'
    relaxation displacements give its recorded structure).
    """

    name = "superposed"
    relaxes_samples = False
    knows_pristine = True

    def __init__(
        self,
        cutoff: float = 5.0,
        patch_atoms: tuple[int, int] = (64, 128),
        samples_at_gamma: bool = False,
        sum_rule: str = "local",
        patch_extent: str = "cutoff",
        pair_reach: float = 0.0,
        uniform_strain: str = "kept",
        patch_symmetric_atoms: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if patch_symmetric_atoms < 0:
            raise UserError(
                f"phonons.patch_symmetric_atoms must be >= 0 (the largest dilute cell taken to "
                f"keep the host's point group; 0: the most compact cell), got "
                f"{patch_symmetric_atoms}."
            )
        self.patch_symmetric_atoms = int(patch_symmetric_atoms)
        if uniform_strain not in UNIFORM_STRAIN:
            raise UserError(
                f"phonons.uniform_strain='{uniform_strain}': choose one of "
                f"{', '.join(UNIFORM_STRAIN)}."
            )
        self.uniform_strain = uniform_strain
        if pair_reach < 0:
            raise UserError(
                f"phonons.pair_reach must be >= 0 (× the host's nearest-neighbour distance; "
                f"0: no pair patches), got {pair_reach}."
            )
        if sum_rule not in ("local", "phonopy"):
            raise UserError(f"phonons.sum_rule='{sum_rule}': choose local or phonopy.")
        if patch_extent not in ("cutoff", "touched"):
            raise UserError(f"phonons.patch_extent='{patch_extent}': choose cutoff or touched.")
        self.pair_reach = float(pair_reach)
        self.samples_at_gamma = bool(samples_at_gamma)
        self.sum_rule = sum_rule
        self.patch_extent = patch_extent
        if cutoff <= 0:
            raise UserError(f"phonons.cutoff must be > 0 Å, got {cutoff}.")
        self.cutoff = float(cutoff)
        self.patch_atoms = (int(patch_atoms[0]), int(patch_atoms[1]))

    def settings(self) -> dict:
        out = {**super().settings(), "cutoff": self.cutoff, "patch_atoms": list(self.patch_atoms)}
        if self.samples_at_gamma:
            out["samples_at_gamma"] = True
        if self.sum_rule != "phonopy":
            out["sum_rule"] = self.sum_rule
        if self.patch_extent != "touched":
            out["patch_extent"] = self.patch_extent
        if self.pair_reach > 0:
            out["pair_reach"] = self.pair_reach
        if self.uniform_strain != "kept":
            out["uniform_strain"] = self.uniform_strain
        if self.patch_symmetric_atoms:
            out["patch_symmetric_atoms"] = self.patch_symmetric_atoms
        return out

    def dilute_supercell(self, host: Atoms) -> Atoms:
        """The cell a patch is cut from: the most compact of ``patch_atoms`` atoms. With
        ``patch_symmetric_atoms`` the smallest cell of up to that many atoms that keeps the host's
        point group with its periodic images no closer: a dopant then keeps its site symmetry and
        its patch needs that many times fewer displacements (wurtzite ZnO: 240 atoms of
        symmetry C1 → 256 of C3v, a fifth of the force calls). With ``uniform_strain=free`` the
        range doubles until bonds lie beyond the cutoff around every site, which
        ``outside_strain`` measures (64 atoms of diamond hold none at 5 Å)."""
        from defectnet.datagen.defect_library import has_far_bonds
        from defectnet.datagen.supercell import (
            choose_supercell,
            image_distance,
            symmetric_supercell,
        )

        low, high = self.patch_atoms
        while True:
            _, cell = choose_supercell(host, low, high, where="phonons.patch_atoms")
            if self.patch_symmetric_atoms:
                top = max(high, self.patch_symmetric_atoms)
                found = symmetric_supercell(host, low, top, image_distance(cell))
                cell = cell if found is None else found[1]
            if self.uniform_strain != "free" or has_far_bonds(cell, self.cutoff):
                return cell
            if high >= MAX_DILUTE_ATOMS:
                raise UserError(
                    f"phonons.uniform_strain=free: no dilute cell of up to {high} atoms has bonds "
                    f"beyond phonons.cutoff={self.cutoff} Å around every site; lower the cutoff."
                )
            low, high = high + 1, 2 * high

    def host_reference(
        self,
        pristine: Atoms,
        forcefield: ForceField,
        host: Atoms | None = None,
        candidates=(),
        store: Path | None = None,
        relax=None,
        settings: dict | None = None,
    ):
        """The parent's library: loaded from ``store`` when it holds one made with the same
        settings, completed with any missing patch, saved after each new patch. Pair patches
        (``pair_reach``) are added the first time a sample needs one, and saved likewise."""
        from defectnet.datagen.defect_library import (
            DefectLibrary,
            PairPatch,
            Patch,
            host_site_of,
            load_library,
            make_pair_patch,
            make_patch,
            nearest_neighbour_distance,
            save_library,
            site_classes,
            strain_response,
        )

        if host is None or relax is None:
            raise ValueError("superposed phonons need the host cell and a relaxation")
        settings = {**self.settings(), **(settings or {})}
        library = load_library(store, settings) if store else None
        classes = site_classes(host)
        site_class = classes.of_atom
        if library is None:
            phonon = self.phonopy(pristine, np.eye(3, dtype=int), forcefield)
            library = DefectLibrary(
                pristine.copy(),
                np.asarray(phonon.force_constants),
                self.n_calls(phonon),
                site_class[host_site_of(pristine, host)],
                classes.representative,
                classes.rotation,
            )
            if self.uniform_strain in ("sample", "free"):
                library.strain = strain_response(
                    pristine, library.force_constants, self, forcefield
                )
                library.n_displacements += library.strain.n_calls
            if store:
                save_library(store, library, settings)
        embedded = EmbeddedForceConstants(self.cutoff, **self.settings_kwargs())
        dilute_cell: list[DefectLibrary] = []

        def dilute() -> DefectLibrary:
            """The dilute cell with its pristine force constants (computed once per run, its
            force calls counted in the library) and the library's single patches."""
            if not dilute_cell:
                cell = self.dilute_supercell(host)
                phonon = self.phonopy(cell, np.eye(3, dtype=int), forcefield)
                library.n_displacements += self.n_calls(phonon)
                strain = None
                if self.uniform_strain != "kept":
                    strain = strain_response(cell, phonon.force_constants, self, forcefield)
                    library.n_displacements += strain.n_calls
                dilute_cell.append(
                    DefectLibrary(
                        cell,
                        np.asarray(phonon.force_constants),
                        0,
                        site_class[host_site_of(cell, host)],
                        classes.representative,
                        classes.rotation,
                        patches=library.patches,
                        strain=strain,
                    )
                )
            return dilute_cell[0]

        references: list[HostForceConstants] = []

        def as_reference(cell: DefectLibrary) -> HostForceConstants:
            """The dilute cell as the embedding reads it: one per run, so that the pristine
            one-sided errors (``plusminus: corrected``) are computed once for all patches."""
            if not references:
                references.append(
                    HostForceConstants(
                        cell.pristine.numbers.copy(), cell.force_constants, 0, cell.pristine
                    )
                )
            return references[0]

        symbols = np.array(host.get_chemical_symbols())
        wanted = [
            (c.dopant, int(k))
            for c in candidates
            for k in sorted(set(classes.representative[site_class[symbols == c.replaces]]))
        ]
        missing = [key for key in wanted if key not in library.patches]
        for done, (dopant, kind) in enumerate(missing, start=1):
            cell = dilute()
            site = int(np.flatnonzero(cell.site_class == kind)[0])
            patch = library.patches[(dopant, kind)] = make_patch(
                cell.pristine,
                site,
                dopant,
                as_reference(cell),
                forcefield,
                relax,
                embedded,
                strain=cell.strain,
                free=self.uniform_strain == "free",
            )
            # a low-symmetry host's library takes most of an hour: say where it stands
            log.info(
                "patch %s on site class %d: %d + %d force calls (displacements + relaxation) "
                "of a %d-atom cell, %.0f s (%d of %d)",
                dopant,
                kind,
                patch.n_calls,
                patch.relax_steps,
                len(cell.pristine),
                patch.seconds,
                done,
                len(missing),
            )
            if store:
                save_library(store, library, settings)

        def pair_builder(key, vector) -> Patch:
            cell = dilute()
            patch = make_pair_patch(
                cell,
                as_reference(cell),
                key,
                vector,
                forcefield,
                relax,
                embedded,
                free=self.uniform_strain == "free",
            )
            library.pairs.setdefault(key, []).append(PairPatch(vector, patch))
            log.info(
                "pair patch %s@%d + %s at %.2f Å: %d force calls, %.0f s (%d pair patches)",
                *key,
                np.linalg.norm(vector),
                patch.n_calls,
                patch.seconds,
                sum(map(len, library.pairs.values())),
            )
            if store:
                save_library(store, library, settings)
            return patch

        library.pair_cutoff = self.pair_reach * nearest_neighbour_distance(library.pristine)
        library.site_ops = classes.site_ops
        library.pair_builder = pair_builder if self.pair_reach > 0 else None
        return library

    def doped_modes(self, doped: Atoms, reference, forcefield: ForceField) -> Modes:
        if reference is None:
            raise ValueError("superposed phonons need the host's defect library (host_reference)")
        fc = reference.doped_force_constants(doped, self.sum_rule, self.patch_extent)
        if self.samples_at_gamma:
            return gamma_modes(fc, doped, projections=self.projections)
        return cell_mesh_modes(fc, doped, self.mesh, self.symprec, self.projections)
