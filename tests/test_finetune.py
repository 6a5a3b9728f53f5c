"""Fine-tuning sets: melt-quenched Si hosts, MgB2, and the pipeline stages they use."""

import json

import numpy as np
import pytest
import spglib
from ase.build import bulk

from defectnet.cli import run_generation
from defectnet.datagen.calculators.chgnet import CHGNetForceField
from defectnet.datagen.parents.melt_quench import MeltQuenchParents, coordination_defects
from defectnet.datagen.parents.mgb2 import MgB2Parents
from defectnet.datagen.supercell import choose_supercell
from defectnet.spectra import EnergyGrid, optical_feature


@pytest.fixture(scope="module")
def chgnet():
    return CHGNetForceField()


def tiny_source(chgnet, quenches):
    return MeltQuenchParents("Si", 5.46, 1, 2, quenches, chgnet, seed=3)


@pytest.mark.slow
def test_melt_quench_disorders_the_crystal_reproducibly(chgnet):
    hot = [{"t_max": 4000, "hold_steps": 60, "quench_steps": 10}]
    source = tiny_source(chgnet, hot)
    ids = [p.id for p in source.parents()]
    assert ids == ["mq-Si8-000-T4000-q10", "mq-Si8-001-T4000-q10"]
    a, b = source.build(0), source.build(0)
    assert np.allclose(a.positions, b.positions)  # seed (seed, j): same structure again
    crystal = source.crystal()
    assert coordination_defects(crystal) == 0.0
    shift = a.positions - crystal.positions
    shift -= np.round(shift @ np.linalg.inv(crystal.cell[:])) @ crystal.cell[:]
    assert np.sqrt((shift**2).sum(1).mean()) > 0.1  # atoms left their crystal sites
    assert not np.allclose(source.build(1).positions, a.positions)


def test_quench_rate_and_bad_config(chgnet):
    from defectnet.datagen.parents.melt_quench import Quench

    assert Quench(2300, 10, 1000).rate_k_per_ps(2.0) == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="parents.quenches"):
        tiny_source(chgnet, [])


def test_optical_feature_finds_peak_and_width():
    grid = EnergyGrid()
    e = grid.energies
    s = np.exp(-0.5 * ((e - 20) / 3) ** 2) + 0.8 * np.exp(-0.5 * ((e - 60) / 4) ** 2)
    f = optical_feature(s, e, above_mev=40)
    assert f["peak_mev"] == pytest.approx(60, abs=grid.step)
    assert f["centroid_mev"] == pytest.approx(60, abs=1.0)
    assert f["fwhm_mev"] == pytest.approx(2.355 * 4, abs=grid.step + 0.1)


def test_mgb2_is_p6mmm_and_its_supercell_holds_18_mg_sites():
    (parent,) = MgB2Parents().parents()
    a = parent.atoms
    cell = (a.cell[:], a.get_scaled_positions(), a.numbers)
    assert spglib.get_symmetry_dataset(cell).number == 191 and len(a) == 3
    _, sc = choose_supercell(a, 54, 54)
    assert sc.get_chemical_symbols().count("Mg") == 18


@pytest.mark.slow
def test_parents_and_references_stages(generate_cfg):
    # half the sites of the 8-atom cell in the high-concentration cell (the default 10 % would
    # be less than two sites here)
    high = ("reference_cells.high_fraction=0.5", "reference_cells.dense_fraction=0")
    cfg = generate_cfg("candidates=[Ge,C]", "stage=parents", "num_shards=2", "shard=1", *high)
    assert run_generation(cfg)["parents"] == {}  # the one parent belongs to shard 0
    cfg = generate_cfg("candidates=[Ge,C]", "stage=parents", *high)
    assert run_generation(cfg)["parents"] == {"ok": 1}
    out = run_generation(generate_cfg("candidates=[Ge,C]", "stage=references", *high))
    assert out["references"] == {
        "parents": 1,
        "dopants": 2,
        "failed": 0,
        "high": 2,
        "failed_high": 0,
    }
    from pathlib import Path

    ref = json.loads((Path(cfg.out_dir) / "references" / "diamond-Si.json").read_text())
    assert set(ref["dopants"]) == {"Ge", "C"}
    ge = ref["dopants"]["Ge"]
    assert ge["concentration"] == pytest.approx(1 / 8)
    assert ge["high"]["concentration"] == pytest.approx(4 / 8)
    # Ge is heavier than Si: its spectrum has more weight at low energy, the more so the more Ge
    e = EnergyGrid().energies
    centroid = lambda s: float((e * np.asarray(s)).sum() / np.sum(s))  # noqa: E731
    assert centroid(ge["high"]["spectrum"]) < centroid(ge["spectrum"]) < centroid(ref["pristine"])
    assert not (Path(cfg.out_dir) / "records").exists()
    # a rerun resumes: nothing left to compute
    again = run_generation(generate_cfg("candidates=[Ge,C]", "stage=references", *high))
    assert again["references"]["dopants"] == again["references"]["high"] == 0
    # a level newly asked for is added to the references already made, the rest kept
    dense = ("reference_cells.high_fraction=0.5", "reference_cells.dense_fraction=0.75")
    more = run_generation(generate_cfg("candidates=[Ge,C]", "stage=references", *dense))
    assert more["references"]["dopants"] == more["references"]["high"] == 0
    assert more["references"]["dense"] == 2
    kept = json.loads((Path(cfg.out_dir) / "references" / "diamond-Si.json").read_text())
    for d, entry in ref["dopants"].items():
        assert {k: v for k, v in kept["dopants"][d].items() if k != "dense"} == entry
    assert kept["dopants"]["Ge"]["dense"]["concentration"] == pytest.approx(6 / 8)
    # the alloy level: its own cell, relaxed and computed whole, with its own pristine spectrum
    alloy = (*dense, "reference_cells.alloy_fraction=0.5", "reference_cells.alloy_atoms=[16,16]")
    more = run_generation(generate_cfg("candidates=[Ge,C]", "stage=references", *alloy))
    assert more["references"]["alloy"] == 2 and more["references"]["dense"] == 0
    final = json.loads((Path(cfg.out_dir) / "references" / "diamond-Si.json").read_text())
    ge = final["dopants"]["Ge"]["alloy"]
    assert ge["atoms"] == 16 and ge["concentration"] == pytest.approx(8 / 16)
    assert ge["volume_change"] > 0.01  # Ge's larger bonds widen half-Ge silicon's lattice
    assert centroid(ge["spectrum"]) < centroid(ge["pristine"])
    others = {k: v for k, v in final["dopants"]["Ge"].items() if k != "alloy"}
    assert others == kept["dopants"]["Ge"]


def test_high_concentration_cell_replaces_the_asked_sites():
    from defectnet.datagen.references import many_dopant_cell, site_count

    cell = bulk("GaAs", "zincblende", 5.65, cubic=True).repeat(2)  # 32 Ga, 32 As
    assert site_count(cell, "Ga", 0.1) == 6 and site_count(cell, "Ga", 0.9) == 32
    doped = many_dopant_cell(cell, "In", "Ga", 6, seed=0)
    symbols = doped.get_chemical_symbols()
    assert symbols.count("In") == 6 and symbols.count("Ga") == 26 and symbols.count("As") == 32
    again = many_dopant_cell(cell, "In", "Ga", 6, seed=0).get_chemical_symbols()
    assert again == symbols  # the same sites for the same seed and dopant


def test_crystal_helper_matches_ase_bulk(chgnet):
    source = tiny_source(chgnet, [{"t_max": 300, "hold_steps": 1, "quench_steps": 1}])
    assert np.allclose(source.crystal().cell[:], bulk("Si", "diamond", 5.46, cubic=True).cell[:])
