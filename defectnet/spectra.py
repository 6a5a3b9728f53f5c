"""Energy grid, broadening, resampling and normalisation of phonon spectra.

Every spectrum in DefectNet is a float32 array on one fixed grid of energies in meV, normalised
to unit area, so that pristine and doped spectra, simulated and measured, compare bin by bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defectnet.errors import UserError

THZ_TO_MEV = 4.135667696  # h·(1 THz) in meV
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class EnergyGrid:
    """Bin centres ``e_min … e_max`` (meV, inclusive) with ``n_points`` points."""

    e_min: float = 0.0
    e_max: float = 200.0
    n_points: int = 100

    def __post_init__(self) -> None:
        if not self.e_max > self.e_min:
            raise UserError(
                f"spectra.e_max ({self.e_max}) must exceed spectra.e_min ({self.e_min}) meV; "
                "set an energy range that holds the spectra."
            )
        if self.n_points < 2:
            raise UserError(f"spectra.n_points is {self.n_points}; the grid needs at least 2.")

    @property
    def energies(self) -> np.ndarray:
        return np.linspace(self.e_min, self.e_max, self.n_points, dtype=np.float64)

    @property
    def step(self) -> float:
        return (self.e_max - self.e_min) / (self.n_points - 1)

    def as_dict(self) -> dict:
        return {"e_min": self.e_min, "e_max": self.e_max, "n_points": self.n_points, "unit": "meV"}


def normalise(spectrum: np.ndarray, grid: EnergyGrid) -> np.ndarray:
    """Scale to unit area (trapezoid rule on the grid); an all-zero spectrum is an error."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    area = np.trapezoid(spectrum, dx=grid.step)
    if not np.isfinite(area) or area <= 0:
        raise ValueError(
            "spectrum has no positive weight on the energy grid "
            f"[{grid.e_min}, {grid.e_max}] meV; check the energy unit and the grid range."
        )
    return (spectrum / area).astype(np.float32)


def broaden_modes(
    frequencies_mev: np.ndarray,
    grid: EnergyGrid,
    fwhm_mev: float,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Density of states from discrete modes: a Gaussian of the instrument FWHM per mode.

    ``weights`` multiplies each mode (q-point weights, or neutron weights in a later step).
    Modes below ``e_min`` (imaginary modes are given as negative energies) and above
    ``e_max`` only contribute their tails. The result is not normalised.
    """
    freqs = np.asarray(frequencies_mev, dtype=np.float64).ravel()
    w = np.ones_like(freqs) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.shape != freqs.shape:
        raise ValueError("broaden_modes: weights and frequencies differ in length.")
    if fwhm_mev <= 0:
        raise ValueError("broaden_modes: fwhm_mev must be positive (instrument resolution).")
    sigma = fwhm_mev * FWHM_TO_SIGMA
    e = grid.energies
    dos = np.zeros_like(e)
    # Chunked so that a 1,500-mode × many-q spectrum never builds a huge matrix at once.
    for start in range(0, freqs.size, 4096):
        f = freqs[start : start + 4096]
        ww = w[start : start + 4096]
        g = np.exp(-0.5 * ((e[None, :] - f[:, None]) / sigma) ** 2)
        dos += (ww[:, None] * g).sum(axis=0)
    return dos / (sigma * np.sqrt(2 * np.pi))


def weight_outside(frequencies_mev: np.ndarray, grid: EnergyGrid, weights=None) -> float:
    """Fraction of mode weight that lies above the grid's upper edge (lost to the grid)."""
    freqs = np.asarray(frequencies_mev, dtype=np.float64).ravel()
    w = np.ones_like(freqs) if weights is None else np.asarray(weights, np.float64).ravel()
    return float(w[freqs > grid.e_max].sum() / w.sum())


def resample(energies_mev: np.ndarray, values: np.ndarray, grid: EnergyGrid) -> np.ndarray:
    """Linear interpolation of a tabulated spectrum onto the grid; zero outside its range."""
    energies_mev = np.asarray(energies_mev, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if energies_mev.ndim != 1 or energies_mev.shape != values.shape:
        raise ValueError("resample: energies and values must be 1-D arrays of equal length.")
    if np.any(np.diff(energies_mev) <= 0):
        raise ValueError("resample: energies must be strictly increasing.")
    return np.interp(grid.energies, energies_mev, values, left=0.0, right=0.0)


def gaussian_smooth(spectrum: np.ndarray, grid: EnergyGrid, fwhm_mev: float) -> np.ndarray:
    """Convolve a spectrum on the grid with a Gaussian of the given FWHM (area preserving)."""
    if fwhm_mev <= 0:
        return np.asarray(spectrum, dtype=np.float32)
    sigma = fwhm_mev * FWHM_TO_SIGMA
    e = grid.energies
    kernel = np.exp(-0.5 * ((e[:, None] - e[None, :]) / sigma) ** 2)
    kernel /= kernel.sum(axis=0, keepdims=True)  # each input bin spreads its full weight
    return (kernel @ np.asarray(spectrum, dtype=np.float64)).astype(np.float32)


def spectrum_from_modes(
    frequencies_mev: np.ndarray, grid: EnergyGrid, fwhm_mev: float, weights=None
) -> np.ndarray:
    """Broadened, unit-area spectrum on the grid: the form every record stores."""
    return normalise(broaden_modes(frequencies_mev, grid, fwhm_mev, weights), grid)


def neutron_weight(symbol: str) -> float:
    """Total bound scattering cross-section over mass (barn/u): how strongly an element's
    motion shows in an inelastic neutron spectrum (incoherent approximation)."""
    import periodictable

    element = getattr(periodictable, symbol, None)
    if element is None or element.neutron.total is None:
        raise ValueError(f"neutron_weight: no neutron cross-section for '{symbol}'.")
    return float(element.neutron.total) / float(element.mass)


def neutron_weighted_spectrum(
    frequencies_mev: np.ndarray,
    weights: np.ndarray,
    element_projections: dict[str, np.ndarray],
    grid: EnergyGrid,
    fwhm_mev: float,
) -> np.ndarray:
    """Generalised (neutron-weighted) DOS: each mode weighted by Σ_el |e_el|² σ_el / M_el.

    ``element_projections[el]`` is, per mode, the share of the eigenvector norm on that
    element (the shares sum to 1 over elements), as ``phonons.mesh_modes`` returns them.
    """
    w = sum(neutron_weight(el) * proj for el, proj in element_projections.items())
    return spectrum_from_modes(frequencies_mev, grid, fwhm_mev, np.asarray(weights) * w)


WEIGHTINGS = ("total", "neutron")


def modes_spectrum(
    modes, grid: EnergyGrid, fwhm_mev: float, weighting: str = "total"
) -> np.ndarray:
    """The spectrum of a set of phonon modes: the total PDoS, or the neutron-weighted one
    (which needs the modes' per-element projections) to compare with a measurement."""
    if weighting == "total":
        return spectrum_from_modes(modes.energies_mev, grid, fwhm_mev, modes.weights)
    if weighting == "neutron":
        if modes.element_projections is None:
            raise ValueError("neutron weighting needs the modes' element projections.")
        return neutron_weighted_spectrum(
            modes.energies_mev, modes.weights, modes.element_projections, grid, fwhm_mev
        )
    raise UserError(f"spectra.weighting='{weighting}': choose one of {', '.join(WEIGHTINGS)}.")


def peak_energy(spectrum: np.ndarray, grid: EnergyGrid, min_height: float = 1.0) -> float:
    """Energy of the highest-energy local maximum at least ``min_height`` × the tallest one
    (1.0: the tallest peak; 0.25: the top of the highest band that carries weight), refined by a
    parabola through the three bins around it."""
    y = np.asarray(spectrum, dtype=np.float64)
    inner = np.flatnonzero((y[1:-1] >= y[:-2]) & (y[1:-1] > y[2:])) + 1
    tall = inner[y[inner] >= min_height * y.max()] if inner.size else inner
    k = int(tall.max()) if tall.size else int(np.clip(np.argmax(y), 1, y.size - 2))
    y0, y1, y2 = y[k - 1 : k + 2]
    curvature = y0 - 2 * y1 + y2
    offset = 0.5 * (y0 - y2) / curvature if curvature != 0 else 0.0
    return float(grid.energies[k] + offset * grid.step)


def mean_energy(spectrum: np.ndarray, grid: EnergyGrid) -> float:
    """First moment of a spectrum on the grid (meV): a softer potential gives a lower one."""
    y = np.asarray(spectrum, dtype=np.float64)
    return float(np.trapezoid(grid.energies * y, dx=grid.step) / np.trapezoid(y, dx=grid.step))


def agreement(a: np.ndarray, b: np.ndarray, grid: EnergyGrid, min_height: float = 1.0) -> dict:
    """How closely spectrum ``a`` follows ``b`` (both unit area on ``grid``): cosine similarity,
    L1 distance (∫|a − b| dE), ratio of mean energies and shift of the peak that ``peak_energy``
    picks (meV, a − b)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return {
        "cosine": float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)),
        "l1": float(np.abs(a - b).sum() * grid.step),
        "mean_energy_ratio": mean_energy(a, grid) / mean_energy(b, grid),
        "peak_shift_mev": peak_energy(a, grid, min_height) - peak_energy(b, grid, min_height),
    }


def optical_feature(spectrum: np.ndarray, energies: np.ndarray, above_mev: float) -> dict:
    """Position (tallest bin, and the weighted mean energy), height and width (FWHM, from the
    bins at half height) of the optical band: the spectrum above ``above_mev``."""
    band = energies >= above_mev
    e, s = energies[band], np.asarray(spectrum)[band]
    top = int(np.argmax(s))
    half = s >= s[top] / 2
    left, right = top, top
    while left > 0 and half[left - 1]:
        left -= 1
    while right < len(s) - 1 and half[right + 1]:
        right += 1
    step = float(energies[1] - energies[0])
    return {
        "peak_mev": float(e[top]),
        "height": float(s[top]),
        "centroid_mev": float((e * s).sum() / s.sum()),
        "fwhm_mev": float(e[right] - e[left] + step),
    }
