"""MgB2 (AlB2 type, P6/mmm) as a parent for the Al-doped Mg(1-x)Al(x)B2 fine-tuning set.

MgB2 is not one of the built-in semiconductor prototypes, so it has its own source; the
pipeline relaxes it with the run's potential and puts Al on Mg sites like any other dopant.
"""

from __future__ import annotations

from ase import Atoms
from ase.spacegroup import crystal

from defectnet.datagen.parents.base import Parent, ParentSource


def mgb2(a: float = 3.086, c: float = 3.524) -> Atoms:
    """The 3-atom cell: Mg at 1a (0, 0, 0), B at 2d (1/3, 2/3, 1/2); a, c in Å (measured
    lattice constants by default; the pipeline relaxes them)."""
    return crystal(
        ["Mg", "B"],
        basis=[(0, 0, 0), (1 / 3, 2 / 3, 1 / 2)],
        spacegroup=191,
        cellpar=[a, a, c, 90, 90, 120],
        primitive_cell=True,
    )


class MgB2Parents(ParentSource):
    """The one parent of the MgB2 set."""

    def __init__(self, a: float = 3.086, c: float = 3.524):
        self.a, self.c = float(a), float(c)

    def parents(self) -> list[Parent]:
        return [Parent("AlB2-MgB2", "MgB2", "AlB2", mgb2(self.a, self.c))]
