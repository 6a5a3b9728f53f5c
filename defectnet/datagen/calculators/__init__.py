"""Machine-learning interatomic potentials behind one small interface.

A ``ForceField`` gives an ASE calculator (for relaxation) and a ``forces`` method over a list of
structures (for the many displaced cells of a phonon calculation), so the batching strategy of
each potential lives with that potential. Importing a potential is deferred to construction:
``mace`` must be imported before ``e3nn`` and is heavy, and neither is needed for other runs.

One module per potential, named like its config (``conf/calculator/<name>.yaml`` →
``calculators/<name>.py``). The default is matgl's TensorNet-MatPES-r2SCAN: its phonons are
close to measured ones (Si Γ optical 59 meV against 64 measured, GaAs 33.3 against 33.3; CHGNet
gives 50–56 and 8–9), and ``scripts/bench_fidelity.py`` ranks the potentials against reference
phonon DOS curves. Its model folder ships inside the package, so the default runs offline.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

log = logging.getLogger(__name__)


class ForceField(ABC):
    """An interatomic potential: a name and version for provenance, a calculator, forces."""

    name: str

    @property
    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def calculator(self) -> Calculator: ...

    def forces(self, structures: list[Atoms]) -> list[np.ndarray]:
        """Forces (eV/Å) for each structure; the default evaluates one at a time."""
        calc = self.calculator()
        out = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calc
            out.append(np.asarray(atoms.get_forces(), dtype=np.float64))
        return out

    def compile(self) -> None:
        """Make force calls faster for a long run where the potential allows (``matgl``); the
        others run as they are."""
        log.info("calculator %s: no compiled form; it runs as it is", self.name)

    def pressure(self, atoms: Atoms) -> float:
        """Pressure (eV/Å³, positive when the cell pushes outward) of ``atoms`` as they are."""
        atoms = atoms.copy()
        atoms.calc = self.calculator()
        return float(-np.trace(atoms.get_stress(voigt=False)) / 3)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version}
