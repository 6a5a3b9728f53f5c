"""A spectrum file is checked against the model's recipe before the model reads it.

The yardstick is how the training spectra were made: the energy grid, the instrument resolution
(FWHM) and the range where phonon bands lie. A file whose declared unit puts its weight outside
any phonon band, that is cut short while its band still rises, that holds weight beyond the grid,
that has fewer points than the resolution needs, or whose resolution is coarser than the model's
is refused with one line naming the file, what was found and the fix. Where the fix is exact
(resampling onto the grid, a range beyond the grid that holds nothing, a resolution finer than
the model's, broadened to it), the spectrum is accepted and one WARNING line says what was done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectnet.io import UNITS, SpectrumFileError
from defectnet.spectra import EnergyGrid, gaussian_smooth

log = logging.getLogger(__name__)


class SpectrumCheckError(SpectrumFileError):
    """A spectrum that is not made like the model's training spectra."""


@dataclass(frozen=True)
class Recipe:
    """What the model's training spectra were: grid, resolution, and the phonon range."""

    grid: EnergyGrid
    fwhm_mev: float
    max_phonon_mev: float = 250.0  # no band beyond (hydrogen stretching modes aside)
    min_band_top_mev: float = 8.0  # the softest crystal's band still reaches this
    cut_fraction: float = 0.1  # a last point this high (× the peak) means the band goes on
    outside_fraction: float = 0.01  # weight beyond the grid that cannot be dropped silently
    min_sharpness: float = 0.06  # ``sharpness`` a crystal's spectrum keeps at the model's FWHM


@dataclass
class Report:
    """What was checked and what was done to one spectrum file."""

    path: Path
    notes: list[str] = field(default_factory=list)

    def did(self, text: str) -> None:
        log.warning("%s: %s", self.path, text)
        self.notes.append(text)


def _refuse(path: Path, text: str):
    raise SpectrumCheckError(f"{path}: {text}")


def _unit_hint(top_mev: float, unit: str, recipe: Recipe) -> str:
    """The units that would put a band top of ``top_mev`` (read in ``unit``) in range."""
    raw = top_mev / UNITS[unit]
    fits = [
        u
        for u, f in UNITS.items()
        if u != unit and recipe.min_band_top_mev <= raw * f <= recipe.max_phonon_mev
    ]
    return f"unit={' or unit='.join(fits)}" if fits else "the energy column and unit="


def check_file(
    path: Path, energies: np.ndarray, intensity: np.ndarray, unit: str, recipe: Recipe
) -> float:
    """Refuse a file read in the wrong unit, cut short or too coarsely sampled; returns the top
    of its band (meV), where its intensity last exceeds 2 % of its peak."""
    y = np.clip(intensity, 0, None)
    if y.max() <= 0:
        _refuse(path, "no positive intensity; check the intensity column.")
    top = float(energies[np.flatnonzero(y > 0.02 * y.max())[-1]])
    if top > recipe.max_phonon_mev or top < recipe.min_band_top_mev:
        _refuse(
            path,
            f"read with unit={unit}, its band ends at {top:.4g} meV, where no crystal's phonon "
            f"band does ({recipe.min_band_top_mev:g}–{recipe.max_phonon_mev:g} meV); check "
            f"{_unit_hint(top, unit, recipe)}.",
        )
    if y[-1] > recipe.cut_fraction * y.max():
        _refuse(
            path,
            f"the spectrum ends at {energies[-1]:.1f} meV with {y[-1] / y.max():.0%} of its peak "
            "height: its band is cut short; give the whole band, up to where the intensity "
            "falls to the background.",
        )
    band = energies <= top
    spacing = float(np.median(np.diff(energies[band]))) if band.sum() > 1 else np.inf
    if band.sum() < 4 or spacing > recipe.fwhm_mev:
        fits = [
            u
            for u, f in UNITS.items()
            if u != unit
            and spacing * f / UNITS[unit] <= recipe.fwhm_mev
            and recipe.min_band_top_mev <= top * f / UNITS[unit] <= recipe.max_phonon_mev
        ]
        unit_hint = f" (read with unit={unit}; with unit={fits[0]} it would be)" if fits else ""
        _refuse(
            path,
            f"{int(band.sum())} points over its band (every {spacing:.3g} meV): the model reads "
            f"spectra at {recipe.fwhm_mev:g} meV resolution; give at least one point per "
            f"{recipe.fwhm_mev:g} meV{unit_hint}.",
        )
    return top


def check_range(
    report: Report, energies: np.ndarray, intensity: np.ndarray, recipe: Recipe
) -> None:
    """Weight beyond the model's grid is refused; an empty range beyond it, or another grid,
    is what resampling does exactly (a WARNING says so)."""
    grid, y = recipe.grid, np.clip(intensity, 0, None)
    area = np.trapezoid(y, energies)
    outside = energies > grid.e_max
    if outside.sum() > 1:
        share = float(np.trapezoid(y[outside], energies[outside]) / area)
        if share > recipe.outside_fraction:
            _refuse(
                report.path,
                f"{share:.1%} of its weight lies above the model's grid ({grid.e_min:g}–"
                f"{grid.e_max:g} meV); check unit=, or use a model trained on a wider grid.",
            )
        report.did(
            f"range {energies[0]:.4g}–{energies[-1]:.4g} meV: the part above {grid.e_max:g} meV "
            f"({share:.1%} of the weight) is left out"
        )
    on_grid = len(energies) == grid.n_points and np.allclose(energies, grid.energies)
    if not on_grid:
        report.did(
            f"resampled from {len(energies)} points ({energies[0]:.4g}–{energies[-1]:.4g} meV) "
            f"onto the model's {grid.n_points}-point grid"
        )


def sharpness(spectrum: np.ndarray, grid: EnergyGrid) -> float:
    """How much a further 4 meV of broadening changes a spectrum (L1, relative): the finer its
    resolution, the more. Crystals at 3 meV FWHM: ≥ 0.073 (pretraining set, every pristine
    spectrum); at 10 meV: ≤ 0.054. Disorder smooths a doped spectrum too (down to 0.009)."""
    return float(
        np.abs(spectrum - gaussian_smooth(spectrum, grid, 4.0)).sum() / np.abs(spectrum).sum()
    )


def match_resolution(
    report: Report, spectrum: np.ndarray, declared: float | None, recipe: Recipe, crystal: bool
) -> np.ndarray:
    """A declared resolution finer than the model's is broadened to it (exact); coarser is
    refused. Undeclared, a ``crystal``'s (the pristine) spectrum smoother than any training
    crystal's is refused; a doped one is judged against its pristine (``compare_sharpness``)."""
    if declared is not None:
        if declared > 1.25 * recipe.fwhm_mev:
            _refuse(
                report.path,
                f"resolution={declared:g} meV, coarser than the model's {recipe.fwhm_mev:g} meV "
                "FWHM, which no processing undoes; measure at a finer resolution, or train on "
                f"spectra made at {declared:g} meV (defectnet-generate spectra.fwhm_mev="
                f"{declared:g}).",
            )
        if declared < recipe.fwhm_mev / 1.25:
            extra = float(np.sqrt(recipe.fwhm_mev**2 - declared**2))
            report.did(
                f"resolution {declared:g} meV broadened to the model's {recipe.fwhm_mev:g} meV "
                f"(Gaussian of {extra:.2g} meV FWHM)"
            )
            return gaussian_smooth(spectrum, recipe.grid, extra)
        return spectrum
    sharp = sharpness(spectrum, recipe.grid)
    if crystal and sharp < recipe.min_sharpness:
        _refuse(
            report.path,
            f"smoother than any crystal's spectrum at the model's {recipe.fwhm_mev:g} meV "
            f"resolution (sharpness {sharp:.3f}, the training crystals' ≥ 0.073): its resolution "
            "looks coarser; declare it with resolution=<FWHM in meV> (a disordered host at the "
            f"model's resolution: resolution={recipe.fwhm_mev:g}).",
        )
    return spectrum


def compare_sharpness(report: Report, doped: np.ndarray, pristine: np.ndarray, recipe: Recipe):
    """A doped spectrum far smoother than its pristine one is either heavily disordered or at a
    coarser resolution: said with a WARNING (heavy doping alone gets there in 5 % of the
    pretraining samples, a 10 meV resolution in 99 %)."""
    ratio = sharpness(doped, recipe.grid) / sharpness(pristine, recipe.grid)
    if ratio < 0.3:
        report.did(
            f"{ratio:.2f} times as sharp as its pristine spectrum: heavy disorder, or a coarser "
            "resolution than the pristine's (declare it with resolution=<FWHM in meV>)"
        )
