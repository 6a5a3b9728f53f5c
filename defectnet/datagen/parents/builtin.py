"""Built-in parents: charge-balanced decorations of common semiconductor prototypes, with
lattice constants guessed from bond radii (relaxed later by the generation)."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import covalent_radii
from ase.spacegroup import crystal

from defectnet.datagen.parents.base import LazyParent, Parent, ParentSource
from defectnet.elements import atomic_number
from defectnet.errors import UserError


def _radius(symbol: str, oxidation: int) -> float:
    """Bond radius guess: Shannon ionic radius for ionic sites, else covalent radius."""
    import warnings

    from pymatgen.core import Species

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing radii fall back to covalent ones below
        try:
            r = Species(symbol, oxidation).ionic_radius
        except ValueError:
            r = None
    return float(r) if r else float(covalent_radii[atomic_number(symbol)])


def _tetrahedral(symbols_oxi: Sequence[tuple[str, int]]) -> float:
    """Cation–anion bond guess for tetrahedral (covalent) frameworks: covalent radii."""
    cations = [covalent_radii[atomic_number(s)] for s, o in symbols_oxi if o > 0]
    anions = [covalent_radii[atomic_number(s)] for s, o in symbols_oxi if o < 0]
    return float(np.mean(cations) + np.mean(anions))


def _ionic(cation: tuple[str, int], anion: tuple[str, int]) -> float:
    return _radius(*cation) + _radius(*anion)


def _crystal(*args, **kwargs) -> Atoms:
    """ASE's space-group builder, reduced to the primitive cell with spglib.

    (ASE's own ``primitive_cell=True`` drops or duplicates atoms that sit near cell faces.)
    """
    import spglib

    conv = crystal(*args, **kwargs)
    cell = (conv.cell[:], conv.get_scaled_positions(), conv.numbers)
    lattice, positions, numbers = spglib.standardize_cell(
        cell, to_primitive=True, no_idealize=True, symprec=1e-3
    )
    return Atoms(numbers=numbers, cell=lattice, scaled_positions=positions, pbc=True)


def _diamond(e, o):
    d = 2 * covalent_radii[atomic_number(e[0])]
    return bulk(e[0], "diamond", a=4 * d / math.sqrt(3))


def _zincblende(e, o):
    d = _tetrahedral(list(zip(e, o)))
    return bulk(e[0] + e[1], "zincblende", a=4 * d / math.sqrt(3))


def _wurtzite(e, o):
    d = _tetrahedral(list(zip(e, o)))
    a = d * math.sqrt(8 / 3)
    return bulk(e[0] + e[1], "wurtzite", a=a, c=a * math.sqrt(8 / 3), u=0.375)


def _rocksalt(e, o):
    return bulk(e[0] + e[1], "rocksalt", a=2 * _ionic((e[0], o[0]), (e[1], o[1])))


def _fluorite(e, o):
    """AX2 (fluorite) or A2X (antifluorite): e[0] on the 4a site, e[1] on the 8c sites."""
    cation, anion = (0, 1) if o[0] > 0 else (1, 0)
    a = 4 * _ionic((e[cation], o[cation]), (e[anion], o[anion])) / math.sqrt(3)
    return _crystal(
        [e[0], e[1]],
        basis=[(0, 0, 0), (0.25, 0.25, 0.25)],
        spacegroup=225,
        cellpar=[a, a, a, 90, 90, 90],
    )


def _chalcopyrite(e, o):
    a = 4 * _tetrahedral(list(zip(e, o))) / math.sqrt(3)
    return _crystal(
        list(e),
        basis=[(0, 0, 0), (0, 0, 0.5), (0.25, 0.25, 0.125)],
        spacegroup=122,
        cellpar=[a, a, 2 * a, 90, 90, 90],
    )


def _perovskite(e, o):
    a = 2 * _ionic((e[1], o[1]), (e[2], o[2]))
    return _crystal(
        list(e),
        basis=[(0.5, 0.5, 0.5), (0, 0, 0), (0.5, 0, 0)],
        spacegroup=221,
        cellpar=[a, a, a, 90, 90, 90],
    )


def _spinel(e, o):
    a = 4 * _ionic((e[1], o[1]), (e[2], o[2]))
    return _crystal(
        list(e),
        basis=[(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (0.26, 0.26, 0.26)],
        spacegroup=227,
        setting=2,
        cellpar=[a, a, a, 90, 90, 90],
    )


def _kesterite(e, o):
    a = 4 * _tetrahedral(list(zip(e, o))) / math.sqrt(3)
    symbols = [e[0], e[0], e[1], e[2], e[3]]
    basis = [(0, 0, 0), (0, 0.5, 0.25), (0, 0.5, 0.75), (0, 0, 0.5), (0.756, 0.757, 0.872)]
    return _crystal(symbols, basis=basis, spacegroup=82, cellpar=[a, a, 2 * a, 90, 90, 90])


def _stannite(e, o):
    a = 4 * _tetrahedral(list(zip(e, o))) / math.sqrt(3)
    basis = [(0, 0.5, 0.25), (0, 0, 0), (0, 0, 0.5), (0.245, 0.245, 0.128)]
    return _crystal(list(e), basis=basis, spacegroup=121, cellpar=[a, a, 2 * a, 90, 90, 90])


def _kesterite_mixed_anion(e, o):
    """Kesterite with an ordered 1:1 mix of two chalcogens: a pentanary parent."""
    atoms = _kesterite(e[:4], o[:4])
    anions = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == e[3]]
    order = sorted(anions, key=lambda i: tuple(np.round(atoms.get_scaled_positions()[i], 3)))
    for i in order[1::2]:
        atoms[i].symbol = e[4]
    scale = _tetrahedral(list(zip(e, o))) / _tetrahedral(list(zip(e[:4], o[:4])))
    atoms.set_cell(atoms.cell * scale, scale_atoms=True)
    return atoms


def _double_perovskite(e, o):
    a = 2 * (_ionic((e[1], o[1]), (e[3], o[3])) + _ionic((e[2], o[2]), (e[3], o[3])))
    basis = [(0.25, 0.25, 0.25), (0, 0, 0), (0.5, 0.5, 0.5), (0.25, 0, 0)]
    return _crystal(list(e), basis=basis, spacegroup=225, cellpar=[a, a, a, 90, 90, 90])


@dataclass(frozen=True)
class Prototype:
    """A structure type, its site formula, and the element pools that fill its sites."""

    name: str
    stoichiometry: tuple[int, ...]
    build: Callable[[tuple[str, ...], tuple[int, ...]], Atoms]
    # Each family: oxidation state per site, then the element pool per site.
    families: tuple[tuple[tuple[int, ...], tuple[tuple[str, ...], ...]], ...]


_III, _V = ("B", "Al", "Ga", "In"), ("N", "P", "As", "Sb")
_II_T, _VI = ("Be", "Mg", "Mn", "Zn", "Cd", "Hg"), ("O", "S", "Se", "Te")
_TETRA_AB = (
    ((3, -3), (_III, _V)),
    ((2, -2), (_II_T, _VI)),
    ((1, -1), (("Cu", "Ag"), ("Cl", "Br", "I"))),
    ((4, -4), (("Si", "Ge", "Sn"), ("C",))),
)
_KESTERITE = (
    (1, 2, 4, -2),
    (
        ("Cu", "Ag"),
        ("Zn", "Cd", "Mg", "Mn", "Fe", "Co", "Ni", "Hg", "Sr", "Ba"),
        ("Si", "Ge", "Sn", "Ti", "Zr"),
        ("S", "Se", "Te"),
    ),
)

PROTOTYPES: tuple[Prototype, ...] = (
    Prototype("diamond", (1,), _diamond, (((0,), (("C", "Si", "Ge", "Sn"),)),)),
    Prototype("zincblende", (1, 1), _zincblende, _TETRA_AB),
    Prototype("wurtzite", (1, 1), _wurtzite, _TETRA_AB),
    Prototype(
        "rocksalt",
        (1, 1),
        _rocksalt,
        (
            (
                (2, -2),
                (
                    ("Mg", "Ca", "Sr", "Ba", "Zn", "Cd", "Pb", "Sn", "Ge", "Mn", "Ni", "Co", "Fe"),
                    _VI,
                ),
            ),
            ((1, -1), (("Li", "Na", "K", "Rb", "Ag"), ("F", "Cl", "Br", "I"))),
            ((3, -3), (("Sc", "Y", "La"), _V)),
        ),
    ),
    Prototype(
        "fluorite",
        (1, 2),
        _fluorite,
        (
            ((2, -1), (("Ca", "Sr", "Ba", "Cd", "Pb"), ("F", "Cl"))),
            ((4, -2), (("Zr", "Hf", "Ce"), ("O",))),
        ),
    ),
    Prototype(
        "antifluorite",
        (1, 2),
        _fluorite,
        (
            ((-2, 1), (("O", "S", "Se", "Te"), ("Li", "Na", "K"))),
            ((-4, 2), (("Si", "Ge", "Sn"), ("Mg",))),
        ),
    ),
    Prototype(
        "chalcopyrite",
        (1, 1, 2),
        _chalcopyrite,
        (
            ((1, 3, -2), (("Cu", "Ag"), ("Al", "Ga", "In"), ("S", "Se", "Te"))),
            ((2, 4, -3), (("Zn", "Cd", "Mg", "Be"), ("Si", "Ge", "Sn"), _V)),
        ),
    ),
    Prototype(
        "perovskite",
        (1, 1, 3),
        _perovskite,
        (
            (
                (1, 2, -1),
                (
                    ("Na", "K", "Rb", "Cs"),
                    ("Mg", "Ca", "Sr", "Zn", "Cd", "Ge", "Sn", "Pb"),
                    ("F", "Cl", "Br", "I"),
                ),
            ),
            ((2, 4, -2), (("Ca", "Sr", "Ba", "Pb"), ("Ti", "Zr", "Hf", "Sn", "Ge"), ("O", "S"))),
            ((3, 3, -2), (("La", "Y"), ("Al", "Ga", "In", "Sc"), ("O",))),
        ),
    ),
    Prototype(
        "spinel",
        (1, 2, 4),
        _spinel,
        (
            (
                (2, 3, -2),
                (
                    ("Mg", "Zn", "Cd", "Mn", "Fe", "Co", "Ni"),
                    ("Al", "Ga", "In", "Cr", "Sc"),
                    ("O", "S", "Se"),
                ),
            ),
        ),
    ),
    Prototype("kesterite", (2, 1, 1, 4), _kesterite, (_KESTERITE,)),
    Prototype("stannite", (2, 1, 1, 4), _stannite, (_KESTERITE,)),
    Prototype(
        "double_perovskite",
        (2, 1, 1, 6),
        _double_perovskite,
        (
            (
                (1, 1, 3, -1),
                (
                    ("K", "Rb", "Cs"),
                    ("Li", "Na", "K", "Ag", "Cu", "Tl"),
                    ("Al", "Ga", "In", "Sc", "Y", "Sb", "Bi", "La"),
                    ("F", "Cl", "Br", "I"),
                ),
            ),
        ),
    ),
    Prototype(
        "kesterite_mixed_anion",
        (2, 1, 1, 2, 2),
        _kesterite_mixed_anion,
        (((1, 2, 4, -2, -2), _KESTERITE[1] + (("S", "Se", "Te"),)),),
    ),
)


def _charge_balanced(elements, oxidations, stoichiometry) -> bool:
    """Every element allows its assigned state (pymatgen) and the charges sum to zero."""
    from pymatgen.core import Element

    if len(set(elements)) != len(elements):
        return False
    if sum(o * n for o, n in zip(oxidations, stoichiometry)) != 0:
        return False
    return all(o == 0 or o in Element(e).oxidation_states for e, o in zip(elements, oxidations))


def _formula(elements, stoichiometry) -> str:
    return "".join(e + (str(n) if n > 1 else "") for e, n in zip(elements, stoichiometry))


class BuiltinParents(ParentSource):
    """Charge-balanced decorations of the built-in prototypes, in a fixed order.

    ``orders`` filters by the number of distinct elements (1 = elemental, 5 = pentanary).
    """

    def __init__(
        self, prototypes: Sequence[str] | None = None, orders: Sequence[int] = (1, 2, 3, 4, 5)
    ):
        known = {p.name: p for p in PROTOTYPES}
        names = list(prototypes) if prototypes else list(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(
                f"parents.prototypes: unknown prototype(s) {unknown}; choose among {sorted(known)}."
            )
        self.prototypes = [known[n] for n in names]
        self.orders = set(orders)

    def specs(self) -> list[tuple[Prototype, tuple[str, ...], tuple[int, ...]]]:
        out = []
        for proto in self.prototypes:
            if len(proto.stoichiometry) not in self.orders:
                continue
            for oxidations, pools in proto.families:
                for elements in itertools.product(*pools):
                    if proto.name == "kesterite_mixed_anion" and elements[3] >= elements[4]:
                        continue  # one ordering per anion pair
                    if _charge_balanced(elements, oxidations, proto.stoichiometry):
                        out.append((proto, elements, oxidations))
        return out

    def parents(self) -> list[Parent]:
        out = []
        for proto, elements, oxidations in self.specs():
            formula = _formula(elements, proto.stoichiometry)
            build = functools.partial(proto.build, elements, oxidations)
            out.append(LazyParent(f"{proto.name}-{formula}", formula, proto.name, build))
        return out
