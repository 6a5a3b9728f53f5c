"""Disordered Si hosts for the Si(1-x)Ge(x) fine-tuning set, made by melt-quench dynamics.

Each parent is one crystal supercell heated with Langevin dynamics under the run's
interatomic potential and cooled linearly to room temperature. A short anneal below melting
gives a near-crystalline host; a melt and a fast quench gives a highly disordered one, so the
set spans the range between the crystal and amorphous Si. The generation pipeline then relaxes
each host (cell and positions), computes its pristine spectrum, puts Ge on random sites and
computes the alloy spectra, exactly as for any other parent.

The dynamics only run when a parent's cell is first needed (a ``LazyParent``; the pipeline
stores the relaxed result once per parent), so listing parents is free and a resumed run never
repeats them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.neighborlist import neighbor_list

from defectnet.datagen.calculators import ForceField
from defectnet.datagen.parents.base import LazyParent, Parent, ParentSource
from defectnet.errors import UserError


@dataclass(frozen=True)
class Quench:
    """One thermal history: hold at ``t_max`` (K) for ``hold_steps``, then cool linearly to
    ``t_final`` over ``quench_steps``; the cooling rate is (t_max − t_final) / (quench_steps·dt)."""

    t_max: float
    hold_steps: int
    quench_steps: int
    t_final: float = 300.0

    def rate_k_per_ps(self, timestep_fs: float) -> float:
        return (self.t_max - self.t_final) / (self.quench_steps * timestep_fs / 1000.0)


def melt_quench(
    atoms: Atoms,
    forcefield: ForceField,
    quench: Quench,
    rng: np.random.Generator,
    timestep_fs: float = 2.0,
    friction_per_fs: float = 0.02,
) -> Atoms:
    """Langevin NVT: hold at ``quench.t_max``, then ramp the bath down to ``quench.t_final``."""
    atoms = atoms.copy()
    atoms.calc = forcefield.calculator()
    MaxwellBoltzmannDistribution(atoms, temperature_K=quench.t_max, rng=rng)
    dyn = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=quench.t_max,
        friction=friction_per_fs / units.fs,
        rng=rng,
    )
    dyn.run(quench.hold_steps)
    for t in np.linspace(quench.t_max, quench.t_final, quench.quench_steps):
        dyn.set_temperature(temperature_K=float(t))
        dyn.run(1)
    out = Atoms(atoms.numbers, cell=atoms.cell[:], positions=atoms.get_positions(), pbc=True)
    out.wrap()
    return out


def coordination_defects(atoms: Atoms, cutoff: float = 2.85, ideal: int = 4) -> float:
    """Fraction of atoms whose number of neighbours within ``cutoff`` Å is not ``ideal``:
    0 for the diamond crystal, ≈ 0.1–0.3 for amorphous Si (a simple measure of disorder)."""
    first = neighbor_list("i", atoms, cutoff)
    counts = np.bincount(first, minlength=len(atoms))
    return float(np.mean(counts != ideal))


class MeltQuenchParents(ParentSource):
    """``n_structures`` disordered cells of one elemental diamond crystal.

    Structure ``j`` follows ``quenches[j % len(quenches)]`` with its own random seed
    ``(seed, j)``; the crystal is ``repeat``³ conventional cells at lattice constant ``a``.
    """

    def __init__(
        self,
        element: str,
        a: float,
        repeat: int,
        n_structures: int,
        quenches: Sequence[dict],
        forcefield: ForceField,
        seed: int = 0,
        timestep_fs: float = 2.0,
        friction_per_fs: float = 0.02,
    ):
        if not quenches:
            raise UserError(
                "parents.quenches: give at least one {t_max, hold_steps, quench_steps}."
            )
        self.element, self.a, self.repeat = element, float(a), int(repeat)
        self.n_structures = int(n_structures)
        self.quenches = [Quench(**dict(q)) for q in quenches]
        self.forcefield, self.seed = forcefield, int(seed)
        self.timestep_fs, self.friction_per_fs = float(timestep_fs), float(friction_per_fs)

    def crystal(self) -> Atoms:
        return bulk(self.element, "diamond", a=self.a, cubic=True).repeat(self.repeat)

    def quench_of(self, index: int) -> Quench:
        return self.quenches[index % len(self.quenches)]

    def build(self, index: int) -> Atoms:
        rng = np.random.default_rng([self.seed, index])
        return melt_quench(
            self.crystal(),
            self.forcefield,
            self.quench_of(index),
            rng,
            self.timestep_fs,
            self.friction_per_fs,
        )

    def parent_id(self, index: int) -> str:
        q = self.quench_of(index)
        return (
            f"mq-{self.element}{len(self.crystal())}-{index:03d}-T{q.t_max:.0f}-q{q.quench_steps}"
        )

    def parents(self) -> list[Parent]:
        return [
            LazyParent(self.parent_id(j), self.element, "melt_quench", partial(self.build, j))
            for j in range(self.n_structures)
        ]
