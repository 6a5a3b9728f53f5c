"""Spectrum files are checked against the model's recipe before they are read: wrong unit, a
band cut short, too few points, a coarser resolution are refused in one line; an exact fix
(resampling, an empty range beyond the grid, a finer resolution broadened) is done with a
WARNING; files made like the training spectra pass as they are."""

import numpy as np
import pytest
from omegaconf import open_dict

from defectnet.data.cache import load_cache
from defectnet.elements import DOPANTS
from defectnet.predict import predict
from defectnet.spectra import gaussian_smooth
from defectnet.spectrum_checks import SpectrumCheckError

from .conftest import DEMO_CACHE, compose_config

HOSTS = {"zincblende-GaAs": "GaAs", "diamond-Si": "Si", "zincblende-SiC": "SiC"}


@pytest.fixture(scope="module")
def demo():
    """One demo sample of each of three hosts: grid, pristine and doped spectra, offered."""
    ds = load_cache(DEMO_CACHE)
    out = {}
    for parent, formula in HOSTS.items():
        i = ds.parent_ids.index(parent)
        offered = [d for d, m in zip(DOPANTS, ds.mask[i]) if m]
        out[formula] = (ds.pristine[i].numpy(), ds.doped[i].numpy(), offered)
    return ds.grid, out


def write(path, energies, values):
    np.savetxt(path, np.c_[energies, values])
    return path


def answer(tmp_path, pretrained, host, doped, pristine, offered, *overrides):
    cfg = compose_config(
        "predict",
        [
            f"ckpt_path={pretrained}",
            f"host={host}",
            f"doped={doped}",
            f"pristine={pristine}",
            f"candidates=[{','.join(offered)}]",
            *overrides,
        ],
    )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "out")
    return predict(cfg)


@pytest.mark.parametrize("host", sorted(HOSTS.values()))
def test_spectra_made_like_the_training_ones_pass_as_they_are(
    demo, pretrained, tmp_path, host, caplog
):
    grid, hosts = demo
    pristine, doped, offered = hosts[host]
    files = [
        write(tmp_path / f"{n}.txt", grid.energies, s) for n, s in (("d", doped), ("p", pristine))
    ]
    summary = answer(tmp_path, pretrained, host, *files, offered)
    assert summary["input_checks"]["doped"]["done"] == []
    assert "WARNING" not in caplog.text


def test_wrong_units_are_refused_with_the_unit_that_fits(demo, pretrained, tmp_path):
    grid, hosts = demo
    pristine, doped, offered = hosts["GaAs"]
    p = write(tmp_path / "p.txt", grid.energies, pristine)
    in_cm = write(tmp_path / "cm.txt", grid.energies / 0.12398419843320026, doped)
    with pytest.raises(SpectrumCheckError, match=r"cm.txt: read with unit=meV.*unit=cm-1"):
        answer(tmp_path, pretrained, "GaAs", in_cm, p, offered)
    in_mev = write(tmp_path / "mev.txt", grid.energies, doped)
    with pytest.raises(SpectrumCheckError, match=r"p.txt: .*unit=THz.*unit=meV"):
        answer(tmp_path, pretrained, "GaAs", in_mev, p, offered, "unit=THz")


def test_a_band_cut_short_or_sampled_at_three_points_is_refused(demo, pretrained, tmp_path):
    grid, hosts = demo
    pristine, doped, offered = hosts["SiC"]
    p = write(tmp_path / "p.txt", grid.energies, pristine)
    top = grid.energies[np.flatnonzero(doped > 0.1 * doped.max())[-1]]
    cut = grid.energies <= top - 10
    short = write(tmp_path / "cut.txt", grid.energies[cut], doped[cut])
    with pytest.raises(SpectrumCheckError, match=r"cut.txt: .*(cut short|short of the host)"):
        answer(tmp_path, pretrained, "SiC", short, p, offered)
    three = np.linspace(0, grid.e_max, 3)
    sparse = write(tmp_path / "three.txt", three, np.interp(three, grid.energies, doped))
    with pytest.raises(SpectrumCheckError, match=r"three.txt: .*points over its band"):
        answer(tmp_path, pretrained, "SiC", sparse, p, offered)


def test_resolution_coarser_than_the_model_is_refused_finer_is_broadened(
    demo, pretrained, tmp_path, caplog
):
    grid, hosts = demo
    pristine, doped, offered = hosts["GaAs"]
    p = write(tmp_path / "p.txt", grid.energies, pristine)
    broad = write(tmp_path / "broad.txt", grid.energies, gaussian_smooth(doped, grid, 9.5))
    wide = write(tmp_path / "wide.txt", grid.energies, gaussian_smooth(pristine, grid, 9.5))
    with pytest.raises(SpectrumCheckError, match=r"wide.txt: smoother than any crystal"):
        answer(tmp_path, pretrained, "GaAs", broad, wide, offered)
    done = answer(tmp_path, pretrained, "GaAs", broad, p, offered)["input_checks"]["doped"]
    assert "as sharp as its pristine spectrum" in done["done"][0]  # answered, with a WARNING
    d = write(tmp_path / "d.txt", grid.energies, doped)
    with pytest.raises(SpectrumCheckError, match=r"resolution=10 meV, coarser"):
        answer(tmp_path, pretrained, "GaAs", d, p, offered, "resolution=10")
    summary = answer(tmp_path, pretrained, "GaAs", d, p, offered, "resolution=1")
    assert "broadened to the model's 3 meV" in summary["input_checks"]["doped"]["done"][0]
    assert "WARNING" in caplog.text


def test_another_grid_is_resampled_and_an_empty_wider_range_kept_with_a_warning(
    demo, pretrained, tmp_path
):
    grid, hosts = demo
    pristine, doped, offered = hosts["Si"]
    fine = np.linspace(0, 300, 601)
    d = write(tmp_path / "d.txt", fine, np.interp(fine, grid.energies, doped, right=0))
    p = write(tmp_path / "p.txt", grid.energies, pristine)
    done = answer(tmp_path, pretrained, "Si", d, p, offered)["input_checks"]["doped"]["done"]
    assert any("above 200 meV" in n for n in done) and any("resampled" in n for n in done)
    heavy = np.interp(fine, grid.energies, doped, right=0) + np.where(
        (fine > 210) & (fine < 240), 0.05, 0
    )
    w = write(tmp_path / "w.txt", fine, heavy)
    with pytest.raises(SpectrumCheckError, match=r"of its weight lies above the model's grid"):
        answer(tmp_path, pretrained, "Si", w, p, offered)
