"""Measured-spectrum files and neutron weighting."""

import numpy as np
import pytest
from ase.build import bulk

from defectnet.datagen.phonons import FiniteDisplacement, mesh_modes
from defectnet.io import SpectrumFileError, input_kind, load_measured, read_spectrum
from defectnet.spectra import (
    EnergyGrid,
    neutron_weight,
    neutron_weighted_spectrum,
    spectrum_from_modes,
)

GRID = EnergyGrid()


def test_two_column_file_with_comments_in_mev(tmp_path):
    f = tmp_path / "si.dat"
    f.write_text(
        "# Si, 5 K\n"
        + "".join(f"{e} {np.exp(-(((e - 60) / 5) ** 2)) + 0.1}\n" for e in range(0, 120, 2))
    )
    e, y = read_spectrum(f, "meV")
    assert e[0] == 0 and e[-1] == 118 and y.max() == pytest.approx(1.1)
    s = load_measured(f, "meV", GRID, elastic_cutoff_mev=5.0, background="min")
    assert np.isclose(np.trapezoid(s, dx=GRID.step), 1, atol=1e-4)
    assert abs(GRID.energies[np.argmax(s)] - 60) <= GRID.step
    assert s[GRID.energies < 5].sum() == 0  # elastic line cut


@pytest.mark.parametrize("unit,scale", [("THz", 4.135667696), ("cm-1", 0.1239841984)])
def test_csv_with_header_and_other_units(tmp_path, unit, scale):
    f = tmp_path / "s.csv"
    f.write_text("energy,intensity\n1.0,2.0\n2.0,3.0\n3.0,1.0\n")
    e, _ = read_spectrum(f, unit)
    assert e == pytest.approx(np.array([1.0, 2.0, 3.0]) * scale, rel=1e-6)


@pytest.mark.parametrize(
    "text,unit,match",
    [
        ("", "meV", "fewer than two data points"),
        ("1\n2\n3\n", "meV", "line 1: 1 column"),
        ("1 2\n2 nan\n", "meV", "line 2: NaN"),
        ("-1 2\n2 3\n", "meV", "line 1: negative energy"),
        ("1 2\n3 3\n2 4\n", "meV", "line 3: energy 2.0 meV does not increase"),
        ("1 2\n2 3\n", "eV", "unknown energy unit 'eV'"),
        ("1 2\n2 x\n", "meV", "line 2: '2 x' is not numeric"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, text, unit, match):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(SpectrumFileError, match=match) as err:
        read_spectrum(f, unit)
    assert str(f) in str(err.value)


def test_numpy_files_read_like_text_files(tmp_path):
    e = np.arange(0.0, 120.0, 2.0)
    y = np.exp(-(((e - 60) / 5) ** 2)) + 0.1
    text = tmp_path / "s.dat"
    text.write_text("".join(f"{a} {b}\n" for a, b in zip(e, y, strict=True)))
    np.save(tmp_path / "s.npy", np.stack([e, y], axis=1))
    np.savez(tmp_path / "s.npz", energy=e, intensity=y)
    want = load_measured(text, "THz", GRID)
    for name in ("s.npy", "s.npz"):
        assert load_measured(tmp_path / name, "THz", GRID) == pytest.approx(want)


@pytest.mark.parametrize(
    "save,match",
    [
        (lambda f: np.savez(f, e=[1.0, 2.0], y=[1.0, 1.0]), r"needs 'energy' and 'intensity'"),
        (lambda f: np.save(f, np.array([1.0, 2.0, 3.0])), r"shape \(3,\)"),
        (lambda f: np.save(f, np.array([[1.0, 2.0], [0.5, 1.0]])), "row 1: energy 0.5"),
        (lambda f: f.write_text("not numpy"), "not a NumPy array file"),
        (lambda f: np.save(f, np.array([{"a": 1}]), allow_pickle=True), "not a NumPy array"),
    ],
)
def test_bad_numpy_files_name_file_and_what_is_wrong(tmp_path, save, match):
    f = tmp_path / ("bad.npz" if "savez" in str(save.__code__.co_names) else "bad.npy")
    save(f)
    with pytest.raises(SpectrumFileError, match=match) as err:
        read_spectrum(f, "meV")
    assert str(f) in str(err.value)


def test_structure_files_are_told_from_spectra(tmp_path):
    assert input_kind(tmp_path / "GaAs.cif") == "structure"
    assert input_kind(tmp_path / "POSCAR") == "structure"
    assert input_kind(tmp_path / "s.npz") == "spectrum"
    assert input_kind(tmp_path / "s.dat") == "spectrum"
    with pytest.raises(SpectrumFileError, match="a folder"):
        read_spectrum(tmp_path, "meV")


def test_neutron_weighting_leaves_a_one_element_crystal_unchanged(chgnet):
    si = bulk("Si", "diamond", a=5.46)
    phonon = FiniteDisplacement().phonopy(si, np.diag([2, 2, 2]), chgnet)
    modes = mesh_modes(phonon, 20.0, n_displacements=1, projections=True)
    assert set(modes.element_projections) == {"Si"}
    assert np.allclose(modes.element_projections["Si"], 1.0)
    plain = spectrum_from_modes(modes.energies_mev, GRID, 3.0, modes.weights)
    weighted = neutron_weighted_spectrum(
        modes.energies_mev, modes.weights, modes.element_projections, GRID, 3.0
    )
    assert np.allclose(plain, weighted, atol=1e-6)


def test_element_shares_of_a_binary_sum_to_one_and_hydrogen_scatters_most(chgnet):
    gaas = bulk("GaAs", "zincblende", a=5.75)
    phonon = FiniteDisplacement().phonopy(gaas, np.diag([2, 2, 2]), chgnet)
    modes = mesh_modes(phonon, 20.0, n_displacements=1, projections=True)
    total = modes.element_projections["Ga"] + modes.element_projections["As"]
    assert np.allclose(total, 1.0, atol=1e-8)
    assert neutron_weight("H") > 50 * neutron_weight("Si")  # hydrogen dominates INS spectra
