"""Geometry relaxation with an interatomic potential (ASE optimisers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from defectnet.errors import UserError

OPTIMISERS = ("BFGS", "FIRE", "LBFGS")
# a starting Hessian's curvatures are kept at or above this (eV/Å²; ASE's BFGS starts from 70 in
# every direction): soft modes of the pristine cell would otherwise ask for long first steps
MIN_CURVATURE = 1.0
# the cell filter's coordinates are factor × log(deformation), so an optimiser step of 0.2 (BFGS's
# largest) strains the cell by up to 0.2 / factor: below this a first step on a small cell
# strains it by more than 5 % and can collapse it (a 2-atom Si cell with stress_tolerance=1e-5)
MIN_CELL_FACTOR = 4.0


@dataclass
class RelaxResult:
    """The relaxed copy and whether it met ``fmax`` within the step limit."""

    atoms: Atoms
    converged: bool
    steps: int
    fmax: float
    volume_change: float

    def summary(self) -> dict:
        return {
            "converged": self.converged,
            "steps": self.steps,
            "fmax": round(self.fmax, 5),
            "volume_change": round(self.volume_change, 5),
        }


def starting_hessian(force_constants: np.ndarray, alpha: float = 70.0) -> np.ndarray:
    """BFGS's first Hessian (3N × 3N) from force constants [N, N, 3, 3] of the same cell:
    symmetrised, curvatures at least ``MIN_CURVATURE``, the three rigid translations (zero
    curvature in the force constants) given ``alpha``."""
    n = len(force_constants)
    h = np.asarray(force_constants).transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    w, v = np.linalg.eigh(0.5 * (h + h.T))
    floored = (v * np.maximum(w, MIN_CURVATURE)) @ v.T
    shift = np.zeros((3 * n, 3))  # the rigid translations, orthonormal
    for axis in range(3):
        shift[axis::3, axis] = 1.0 / np.sqrt(n)
    # projected rather than picked among the eigenvectors: those of a degenerate zero
    # eigenvalue mix translations with any other free motion
    rest = np.eye(3 * n) - shift @ shift.T
    return rest @ floored @ rest + alpha * shift @ shift.T


def relax(
    atoms: Atoms,
    calculator: Calculator,
    fmax: float = 0.01,
    steps: int = 300,
    relax_cell: bool = False,
    optimizer: str = "BFGS",
    stress_tolerance: float | None = None,
    force_constants: np.ndarray | None = None,
) -> RelaxResult:
    """Relax positions (and the cell when ``relax_cell``) until every force is below ``fmax``.

    The cell's generalised force is the stress × the volume per atom (ASE's default scaling),
    so a dilute dopant's stress, which falls as 1 / atoms, passes ``fmax`` untouched in a large
    cell (one Sb in 512 atoms of GaAs: 0.0097 eV/Å against fmax 0.01, no cell step at all).
    ``stress_tolerance`` (eV/Å³) rescales the cell's share so that the stress itself must fall
    below it (in cells under ~4 × fmax / tolerance Å³, below what ``MIN_CELL_FACTOR`` allows,
    and never laxer than ASE's default). ``force_constants`` of a nearby structure with the
    same atoms (a dopant's pristine cell) start BFGS from its Hessian instead of a uniform guess:
    one dopant in 216 atoms of CuInSe₂ relaxes in 5 steps instead of 29. The input is left
    untouched. Not converging is not an error: the caller records it.
    """
    import ase.optimize
    from ase.filters import FrechetCellFilter

    if optimizer not in OPTIMISERS:
        raise UserError(f"relax.optimizer: '{optimizer}' is not one of {OPTIMISERS}.")
    work = atoms.copy()
    work.calc = calculator
    target = work
    if relax_cell:
        factor = None  # ASE's default: the number of atoms
        if stress_tolerance:
            wanted = stress_tolerance * atoms.get_volume() / fmax
            factor = min(len(atoms), max(wanted, MIN_CELL_FACTOR))
        target = FrechetCellFilter(work, exp_cell_factor=factor)
    opt = getattr(ase.optimize, optimizer)(target, logfile=None)
    if force_constants is not None and optimizer == "BFGS":
        h0 = np.eye(opt.optimizable.ndofs()) * opt.alpha  # the cell's rows keep the uniform guess
        h0[: 3 * len(atoms), : 3 * len(atoms)] = starting_hessian(force_constants, opt.alpha)
        opt.H0 = h0
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = target.get_forces()
    final = work.copy()
    final.calc = None
    return RelaxResult(
        atoms=final,
        converged=converged,
        steps=int(opt.get_number_of_steps()),
        fmax=float(np.sqrt((forces**2).sum(axis=1)).max()),
        volume_change=float(final.get_volume() / atoms.get_volume() - 1.0),
    )
