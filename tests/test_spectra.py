import numpy as np
import pytest

from defectnet.spectra import (
    EnergyGrid,
    gaussian_smooth,
    resample,
    spectrum_from_modes,
    weight_outside,
)


def test_spectrum_from_modes_has_unit_area_and_peaks_at_the_mode():
    grid = EnergyGrid()
    s = spectrum_from_modes(np.array([60.0, 60.0, 20.0]), grid, fwhm_mev=4.0)
    assert s.dtype == np.float32 and s.shape == (100,)
    assert np.isclose(np.trapezoid(s, dx=grid.step), 1.0, atol=1e-4)
    assert abs(grid.energies[np.argmax(s)] - 60) <= grid.step


def test_smoothing_keeps_area_and_widens():
    grid = EnergyGrid()
    s = spectrum_from_modes(np.array([80.0]), grid, fwhm_mev=2.0)
    wide = gaussian_smooth(s, grid, fwhm_mev=10.0)
    assert np.isclose(wide.sum(), s.sum(), rtol=1e-4)
    assert wide.max() < s.max()


def test_resample_and_outside_weight():
    grid = EnergyGrid(0, 100, 11)
    out = resample(np.array([0.0, 50.0, 100.0]), np.array([0.0, 1.0, 0.0]), grid)
    assert out[5] == pytest.approx(1.0) and out[0] == 0
    assert weight_outside(np.array([10.0, 150.0]), grid) == 0.5
    with pytest.raises(ValueError, match="strictly increasing"):
        resample(np.array([1.0, 0.0]), np.array([1.0, 1.0]), grid)


def test_bad_grid_is_rejected():
    with pytest.raises(ValueError, match="e_max"):
        EnergyGrid(100, 50, 100)
