"""defectnet-predict: spectrum or structure files → dopants, concentrations, interval, report."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import write
from omegaconf import OmegaConf, open_dict

from defectnet.data.cache import load_cache
from defectnet.data.references import LEVELS, THREE_POINT
from defectnet.elements import DOPANTS, PROPOSABLE, UnknownElementError
from defectnet.ensemble import normal_quantile
from defectnet.errors import UserError
from defectnet.io import SpectrumFileError
from defectnet.model.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_network
from defectnet.model.pretrained import ship
from defectnet.model.reference_defectnet import ReferenceDefectNet
from defectnet.predict import host_signatures, predict
from defectnet.spectra import EnergyGrid

from .conftest import DEMO_CACHE, DEMO_REFERENCES, compose_config


@pytest.fixture(scope="module")
def gaas_files(tmp_path_factory):
    """Pristine and doped spectra of one demo GaAs sample as two-column text (meV)."""
    ds = load_cache(DEMO_CACHE)
    i = next(k for k, p in enumerate(ds.parent_ids) if p == "zincblende-GaAs")
    folder = tmp_path_factory.mktemp("spectra")
    e = ds.grid.energies
    for name in ("pristine", "doped"):
        np.savetxt(folder / f"{name}.txt", np.c_[e, getattr(ds, name)[i].numpy()], header="E I")
    present = [DOPANTS[j] for j in np.flatnonzero(ds.targets[i].numpy())]
    offered = [DOPANTS[j] for j in np.flatnonzero(ds.mask[i].numpy())]
    return folder, present, offered


def run(tmp_path, ckpt, *overrides):
    cfg = compose_config("predict", [f"ckpt_path={ckpt}", *overrides])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "out")
    return predict(cfg)


def test_ensemble_prediction_with_candidates_writes_table_json_and_report(
    ensemble, gaas_files, tmp_path, capsys
):
    folder, present, offered = gaas_files
    summary = run(
        tmp_path,
        f"[{ensemble[0]},{ensemble[1]}]",
        "host=GaAs",
        f"doped={folder / 'doped.txt'}",
        f"pristine={folder / 'pristine.txt'}",
        f"candidates=[{','.join(offered)}]",
    )
    assert sorted(r["dopant"] for r in summary["dopants"]) == sorted(offered)
    for r in summary["dopants"]:
        assert 0 <= r["low"] <= r["concentration"] <= r["high"]
    assert not summary["open_set"] and len(summary["checkpoints"]) == 2
    saved = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert saved["dopants"] == summary["dopants"]
    assert Path(summary["report"]).stat().st_size > 20_000
    assert "90 % interval" in capsys.readouterr().out


def test_a_shipped_cards_presence_rule_calls_on_the_ensembles_lower_bound(
    ensemble, gaas_files, tmp_path
):
    folder, present, offered = gaas_files
    args = (
        "host=GaAs",
        f"doped={folder / 'doped.txt'}",
        f"pristine={folder / 'pristine.txt'}",
        f"candidates=[{','.join(offered)}]",
    )
    shipped = tmp_path / "shipped"
    ship(ensemble, {"presence": {"spread_weight": 2.0, "threshold": 1e-3}}, shipped)
    summary = run(tmp_path, shipped, *args)
    assert summary["spread_weight"] == 2.0 and summary["threshold"] == 1e-3
    z = normal_quantile(0.9)  # the card sets no widening: high = mean + z × spread
    for r in summary["dopants"]:
        spread = (r["high"] - r["concentration"]) / z
        assert r["presence_score"] == pytest.approx(r["concentration"] - 2 * spread, abs=1e-6)
        assert r["present"] == (r["presence_score"] > max(1e-3, r["detection_limit"]))
    # the same members without a card: their own thresholds, on the mean
    plain = run(tmp_path, f"[{ensemble[0]},{ensemble[1]}]", *args)
    assert plain["spread_weight"] == 0.0
    assert all(r["presence_score"] == r["concentration"] for r in plain["dopants"])
    # at one threshold, the lower bound calls a subset of what the mean calls
    called = {r["dopant"] for r in summary["dopants"] if r["present"]}
    on_mean = {r["dopant"] for r in plain["dopants"] if r["concentration"] > 1e-3}
    assert called <= on_mean
    assert plain["threshold"] == pytest.approx(
        np.mean([load_network(p)[2].guided for p in ensemble])
    )


def test_a_card_threshold_chosen_on_full_cells_calls_the_given_candidates(
    ensemble, gaas_files, tmp_path
):
    folder, present, offered = gaas_files
    args = ("host=GaAs", f"doped={folder / 'doped.txt'}", f"pristine={folder / 'pristine.txt'}")
    rule = {"spread_weight": 2.0, "threshold": 1e-3, "open_set_threshold": 2e-3}
    shipped = tmp_path / "shipped"
    ship(ensemble, {"presence": {**rule, "full_cells_threshold": 4e-3}}, shipped)
    given = f"candidates=[{','.join(offered)}]"
    assert run(tmp_path, shipped, *args, given)["threshold"] == 4e-3
    assert run(tmp_path, shipped, *args, given, "threshold_from=val")["threshold"] == 1e-3
    assert run(tmp_path, shipped, *args)["threshold"] == 2e-3  # the open set keeps its own
    with pytest.raises(UserError, match="threshold_from=measured: choose full_cells or val"):
        run(tmp_path, shipped, *args, given, "threshold_from=measured")


def test_a_reference_informed_model_finds_the_hosts_references_by_formula(
    reference_checkpoint, gaas_files, tmp_path
):
    folder, present, offered = gaas_files
    files = (f"doped={folder / 'doped.txt'}", f"pristine={folder / 'pristine.txt'}")
    summary = run(
        tmp_path,
        reference_checkpoint,
        "host=GaAs",
        *files,
        f"candidates=[{','.join(offered)}]",
        f"references={DEMO_REFERENCES}",
    )
    assert summary["references"] == "zincblende-GaAs"
    assert all(r["concentration"] >= 0 for r in summary["dopants"])
    one_file = DEMO_REFERENCES / "zincblende-GaAs.json"  # a file is taken as given
    again = run(tmp_path, reference_checkpoint, "host=GaAs", *files, f"references={one_file}")
    assert again["references"] == "zincblende-GaAs"
    with pytest.raises(UserError, match="no single-dopant references for host GaN"):
        run(tmp_path, reference_checkpoint, "host=GaN", *files, f"references={DEMO_REFERENCES}")


def test_a_level_the_hosts_references_lack_is_named(caplog):
    cfg = OmegaConf.create({"references": str(DEMO_REFERENCES), "host": "GaAs"})
    two, three = ReferenceDefectNet(), ReferenceDefectNet(levels=THREE_POINT)
    with caplog.at_level("WARNING"):
        matrix, parent = host_signatures([two], cfg, EnergyGrid(), ["Zn"])
        assert matrix.shape == (1, len(LEVELS) * 56, 100) and parent == "zincblende-GaAs"
        assert "dense reference" not in caplog.text
        host_signatures([three], cfg, EnergyGrid(), ["Zn"])
    assert "zincblende-GaAs has no dense reference for Zn, which the model reads" in caplog.text


def test_a_real_crystals_spectrum_is_read_with_the_alloy_cell_in_the_dense_slot(tmp_path, caplog):
    ref = json.loads((DEMO_REFERENCES / "zincblende-GaAs.json").read_text())
    zn = ref["dopants"]["Zn"]
    pristine = np.asarray(ref["pristine"])
    spectrum = pristine + 0.2 * np.roll(np.asarray(zn["spectrum"]) - pristine, 3)
    zn["alloy"] = {"concentration": 0.2, "spectrum": spectrum.tolist(), "pristine": ref["pristine"]}
    (tmp_path / "GaAs.json").write_text(json.dumps(ref))
    three = ReferenceDefectNet(levels=THREE_POINT)
    cfg = compose_config("predict", ["host=GaAs", f"references={tmp_path / 'GaAs.json'}"])
    with caplog.at_level("INFO"):
        matrix, _ = host_signatures([three], cfg, EnergyGrid(), ["Zn"])
    rows = matrix[0].unflatten(0, (len(LEVELS), -1))
    slot = DOPANTS.index("Zn")
    assert torch.allclose(rows[LEVELS.index("dense"), slot], rows[LEVELS.index("alloy"), slot])
    assert "alloy cells read in place of its dense ones" in caplog.text
    cfg.reference_stand_ins = None  # each level as made: Zn has no dense cell in the demo
    matrix, _ = host_signatures([three], cfg, EnergyGrid(), ["Zn"])
    assert not matrix[0].unflatten(0, (len(LEVELS), -1))[LEVELS.index("dense"), slot].any()
    cfg.reference_stand_ins = {"dense": "alloys"}
    with pytest.raises(UserError, match="reference_stand_ins: {'dense': 'alloys'}"):
        host_signatures([three], cfg, EnergyGrid(), ["Zn"])


def test_open_set_offers_every_non_host_element(pretrained, gaas_files, tmp_path):
    folder, *_ = gaas_files
    summary = run(
        tmp_path,
        pretrained,
        "host=GaAs",
        f"doped={folder / 'doped.txt'}",
        f"pristine={folder / 'pristine.txt'}",
    )
    names = {r["dopant"] for r in summary["dopants"]}
    assert summary["open_set"] and names == set(PROPOSABLE) - {"Ga", "As"}
    assert all(r["low"] is None for r in summary["dopants"])  # one checkpoint: no interval


def test_structure_files_are_simulated(pretrained, tmp_path):
    si = bulk("Si", "diamond", a=5.46)
    doped = bulk("Si", "diamond", a=5.46, cubic=True)
    doped[0].symbol = "Ge"
    write(tmp_path / "Si.cif", si)
    write(tmp_path / "SiGe.cif", doped)
    summary = run(
        tmp_path,
        pretrained,
        "host=Si",
        f"doped={tmp_path / 'SiGe.cif'}",
        f"pristine={tmp_path / 'Si.cif'}",
        "candidates=[Ge,C]",
        "simulate.min_atoms=8",
        "simulate.max_atoms=16",
    )
    assert {r["dopant"] for r in summary["dopants"]} == {"Ge", "C"}


def test_bad_inputs_are_clear_errors(pretrained, gaas_files, tmp_path):
    folder, *_ = gaas_files
    files = [f"doped={folder / 'doped.txt'}", f"pristine={folder / 'pristine.txt'}"]
    with pytest.raises(UnknownElementError, match="Xx"):
        run(tmp_path, pretrained, "host=GaXx", *files)
    with pytest.raises(UnknownElementError, match="noble gas"):
        run(tmp_path, pretrained, "host=GaAs", "candidates=[Ar]", *files)
    short = tmp_path / "short.txt"
    np.savetxt(short, np.c_[np.linspace(0, 10, 20), np.ones(20)])
    with pytest.raises(SpectrumFileError, match="ends at 10.0 meV"):
        run(tmp_path, pretrained, "host=GaAs", f"doped={short}", files[1])
    with pytest.raises(CheckpointError, match="matches no checkpoint"):
        run(tmp_path, tmp_path / "nothing-here", "host=GaAs", *files)


def test_foreign_and_old_checkpoints_are_refused(pretrained, tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="no 'defectnet' entry"):
        load_network(tmp_path / "foreign.ckpt")
    state = torch.load(pretrained, weights_only=True)
    state["defectnet"]["format_version"] = "0"
    torch.save(state, tmp_path / "old.ckpt")
    with pytest.raises(
        CheckpointError, match=f"format '0', this DefectNet reads '{CHECKPOINT_FORMAT}'"
    ):
        load_network(tmp_path / "old.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_network(tmp_path / "text.ckpt")
    state = torch.load(pretrained, weights_only=True)
    assert state["defectnet"]["network"]["_target_"] == "defectnet.model.defectnet.DefectNet"
    state["defectnet"]["network"]["_target_"] = "subprocess.Popen"
    torch.save(state, tmp_path / "hostile.ckpt")
    with pytest.raises(CheckpointError, match="'subprocess.Popen' is not one of DefectNet's"):
        load_network(tmp_path / "hostile.ckpt")
    state = torch.load(pretrained, weights_only=True)
    state["defectnet"]["network"]["share_gain"] = False  # a setting another version had
    torch.save(state, tmp_path / "other_version.ckpt")
    with pytest.raises(CheckpointError, match=r"does not have \(share_gain\); load it with"):
        load_network(tmp_path / "other_version.ckpt")


def test_the_model_recipe_travels_with_it_and_a_foreign_weighting_is_refused(
    pretrained, gaas_files, tmp_path
):
    from defectnet.model.checkpoint import read_recipe

    recipe = read_recipe(pretrained)
    assert recipe["fwhm_mev"] == 3.0 and recipe["weighting"] in ("total", "neutron")
    assert recipe["grid"]["n_points"] == 100 and recipe["calculator"]["name"]
    folder, _, offered = gaas_files
    files = [f"doped={folder / 'doped.txt'}", f"pristine={folder / 'pristine.txt'}"]
    other = "neutron" if recipe["weighting"] == "total" else "total"
    with pytest.raises(UserError, match=f"weighting={other}: the model was trained on"):
        run(tmp_path, pretrained, "host=GaAs", *files, f"weighting={other}", "candidates=[Zn]")
    summary = run(
        tmp_path, pretrained, "host=GaAs", *files, "simulate.fwhm_mev=9", "candidates=[Zn]"
    )
    assert summary["recipe"]["fwhm_mev"] == 3.0  # the model's, not the config's copy
    assert summary["model"].startswith("spectrum-only") or "ensemble" in summary["model"]
    assert summary["output_dir"] == str(tmp_path / "out")
