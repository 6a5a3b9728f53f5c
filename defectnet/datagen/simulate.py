"""One crystal through the physics: relaxation with a force field, then phonons in a supercell
chosen by size. The parent stage of the generation and prediction from a structure file both
simulate a crystal this way, so a predicted structure is treated exactly like a parent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from defectnet.datagen.calculators import ForceField
from defectnet.datagen.phonons import Modes
from defectnet.datagen.relax import RelaxResult, relax
from defectnet.datagen.supercell import choose_supercell


def relax_with(
    forcefield: ForceField,
    atoms: Atoms,
    settings: Mapping,
    force_constants: np.ndarray | None = None,
) -> RelaxResult:
    """Relax with a force field and a relaxation section (fmax, steps, relax_cell, optimizer);
    ``force_constants`` of the pristine cell start BFGS from its Hessian (``relax``)."""
    return relax(
        atoms,
        forcefield.calculator(),
        fmax=settings["fmax"],
        steps=settings["steps"],
        relax_cell=settings["relax_cell"],
        optimizer=settings["optimizer"],
        stress_tolerance=settings.get("stress_tolerance"),
        force_constants=force_constants,
    )


@dataclass
class Simulator:
    """A force field, a phonon method, a relaxation section (fmax, steps, relax_cell,
    optimizer) and the supercell size range for the phonons."""

    forcefield: ForceField
    phonons: object
    relaxation: Mapping
    supercell_atoms: tuple[int, int]

    def relax(self, atoms: Atoms) -> RelaxResult:
        return relax_with(self.forcefield, atoms, self.relaxation)

    def modes(self, relaxed: Atoms, where: str) -> tuple[np.ndarray, Modes]:
        """The supercell matrix chosen for ``relaxed`` and its phonon modes."""
        lo, hi = self.supercell_atoms
        matrix, _ = choose_supercell(relaxed, lo, hi, where=where)
        return matrix, self.phonons.modes(relaxed, matrix, self.forcefield)
