"""Reference crystals and their phonon DOS from NCrystal's standard library (offline).

NCrystal ships ~130 materials, each with a crystal structure and per-element vibrational DOS
curves (measured or first-principles). They are the yardstick for the potentials: the pipeline
computes a crystal's pristine spectrum with its own parent stage, and ``scripts/bench_fidelity.py``
compares it with the reference curve put on the same grid at the same resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import cellpar_to_cell

from defectnet.spectra import EnergyGrid, gaussian_smooth, neutron_weight, normalise

EV_TO_MEV = 1000.0


@dataclass(frozen=True)
class ReferenceDOS:
    """Per-element VDOS curves of one material: element → (energies meV, density), and each
    element's share of the atoms."""

    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    fractions: dict[str, float]

    def spectrum(self, grid: EnergyGrid, fwhm_mev: float, weighting: str = "total") -> np.ndarray:
        """The total (or neutron-weighted) DOS on ``grid``, broadened by ``fwhm_mev`` and of unit
        area, the form the pipeline's spectra have.

        Each element's curve is normalised to one mode per degree of freedom, continued to zero
        energy as E² (the Debye limit, as NCrystal does), summed with the element's share of the
        atoms, broadened on a fine grid and then resampled.
        """
        fine = EnergyGrid(grid.e_min, grid.e_max, 8 * (grid.n_points - 1) + 1)
        e = fine.energies
        total = np.zeros_like(e)
        for element, (energies, density) in self.curves.items():
            curve = np.interp(e, energies, density, left=0.0, right=0.0)
            below = e < energies[0]
            curve[below] = density[0] * (e[below] / energies[0]) ** 2
            area = np.trapezoid(curve, e)
            if area <= 0:
                continue
            weight = neutron_weight(element) if weighting == "neutron" else 1.0
            total += self.fractions[element] * weight * curve / area
        smooth = gaussian_smooth(total, fine, fwhm_mev)
        return normalise(np.interp(grid.energies, e, smooth), grid)


def crystal_of(info) -> Atoms:
    """The crystal structure of an NCrystal ``Info`` as ASE atoms (fractional positions)."""
    s = info.structure_info
    cell = cellpar_to_cell([s["a"], s["b"], s["c"], s["alpha"], s["beta"], s["gamma"]])
    symbols, positions = [], []
    for ai in info.atominfos:
        for pos in ai.positions:
            symbols.append(ai.atomData.elementName())
            positions.append(pos)
    return Atoms(symbols=symbols, cell=cell, scaled_positions=positions, pbc=True)


def reference_of(info) -> ReferenceDOS:
    """Per-element VDOS curves (meV) of an NCrystal ``Info``."""
    curves, fractions = {}, {}
    for dyn in info.dyninfos:
        (e_lo, e_hi), density = dyn.vdosData()
        density = np.asarray(density, dtype=np.float64)
        energies = np.linspace(e_lo, e_hi, density.size) * EV_TO_MEV
        element = dyn.atomData.elementName()
        curves[element] = (energies, density)
        fractions[element] = float(dyn.fraction)
    return ReferenceDOS(curves, fractions)
