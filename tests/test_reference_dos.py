"""Reference crystals and phonon DOS from NCrystal, and the pipeline's spectra against them."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from defectnet.datagen.parents.ncrystal import NCrystalParents
from defectnet.spectra import EnergyGrid, agreement, mean_energy, peak_energy

GRID = EnergyGrid()


def test_usable_crystals_are_in_the_vocabulary_and_small():
    parents = NCrystalParents(max_atoms=40).parents()
    ids = {p.id for p in parents}
    assert {"Si_sg227", "Ge_sg227", "GaN_sg186_GalliumNitride"} <= ids
    assert "MgD2_sg136_MagnesiumDeuteride" not in ids  # deuterium is not the vocabulary's H
    assert "PbS_sg225_LeadSulfide" not in ids  # Pb lies beyond the vocabulary
    assert all(len(p.atoms) <= 40 for p in parents) and len(parents) >= 60
    si = next(p for p in parents if p.id == "Si_sg227")
    assert si.formula == "Si" and len(si.atoms) == 8
    assert abs(si.atoms.get_volume() - 5.4307**3) < 1e-3


def test_reference_spectrum_is_unit_area_with_the_optical_band_where_measured():
    source = NCrystalParents(files=["Si_sg227", "GaN_sg186_GalliumNitride"])
    si = source.reference("Si_sg227").spectrum(GRID, 3.0)
    assert abs(np.trapezoid(si, dx=GRID.step) - 1) < 1e-4
    assert 55 < peak_energy(si, GRID, 0.25) < 62  # Si's TO band (measured TO(X) 57–61 meV)
    gan = source.reference("GaN_sg186_GalliumNitride")
    neutron = gan.spectrum(GRID, 3.0, weighting="neutron")
    # N (σ/M 0.83 barn/u) outscatters Ga (0.10): the neutron-weighted DOS sits higher
    assert mean_energy(neutron, GRID) > mean_energy(gan.spectrum(GRID, 3.0), GRID) + 5


def test_unknown_or_unusable_entries_are_named():
    with pytest.raises(ValueError, match="parents.files: .*Unobtainium"):
        NCrystalParents(files=["Unobtainium"]).parents()
    with pytest.raises(ValueError, match="PbS_sg225_LeadSulfide.ncmat is not usable"):
        NCrystalParents(files=["PbS_sg225_LeadSulfide"]).parents()


@pytest.mark.slow
def test_default_potential_follows_the_reference_dos_of_silicon(tmp_path):
    """The pipeline's parent stage with the default calculator, against NCrystal's Si DOS."""
    from hydra.utils import instantiate

    from defectnet.datagen.context import Context
    from defectnet.datagen.hosts import prepare_parent
    from defectnet.datagen.settings import grid_from_config

    from .conftest import compose_config

    cfg = compose_config("bench/fidelity", ["parents.files=[Si_sg227]", f"out_dir={tmp_path}"])
    (parent,) = instantiate(cfg.parents).parents()
    ctx = Context(
        cfg,
        instantiate(cfg.calculator),
        instantiate(cfg.phonons),
        grid_from_config(cfg),
        tmp_path,
        "test",
    )
    state = prepare_parent(ctx, parent)
    assert state["status"] == "ok", state
    ref = NCrystalParents(files=["Si_sg227"]).reference("Si_sg227").spectrum(GRID, 3.0)
    match = agreement(np.asarray(state["pristine"]), ref, GRID, 0.25)
    assert match["cosine"] > 0.95 and abs(match["mean_energy_ratio"] - 1) < 0.03, match
    assert abs(match["peak_shift_mev"]) < 2.0, match
    assert OmegaConf.select(cfg, "calculator._target_").endswith("MatGLForceField")
