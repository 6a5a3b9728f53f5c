"""Every setting is checked when the command starts, before any force call, file read or
training step: each mistake is one line on stderr naming the setting and the fix, exit code 2,
no traceback, nothing written."""

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from defectnet.cli import reports_user_errors, run_generation
from defectnet.predict import predict
from defectnet.training import train

from .conftest import DEMO_CACHE, compose_config


def refused(task, cfg, capsys, expect: str) -> str:
    """Run ``task`` as a console command does; it must stop with one line naming ``expect``."""
    with pytest.raises(SystemExit) as stop:
        reports_user_errors("cmd")(task)(cfg)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith("defectnet-cmd: error: ") and "Traceback" not in err
    assert expect in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "overrides,expect",
    [
        (["phonons=superposed", "phonons.sum_rule=bogus"], "phonons.sum_rule='bogus'"),
        (["phonons=superposed", "phonons.patch_extent=far"], "phonons.patch_extent='far'"),
        (["phonons=embedded", "phonons.cutoff=-1"], "phonons.cutoff must be >= 0"),
        (["num_shards=0"], "num_shards=0"),
        (["shard=3", "num_shards=2"], "shard=3 must lie"),
        (["candidates=[Xx]"], "candidates: 'Xx'"),
        (["pristine_spectrum=parent"], "pristine_spectrum=parent"),
        (["stage=everything"], "stage='everything'"),
        (["force_workers=0"], "force_workers=0"),
        (["phonons=full", "phonons.plusminus=corrected"], "phonons.plusminus=corrected"),
        (["phonons=embedded", "phonons.plusminus=both"], "phonons.plusminus='both'"),
    ],
)
def test_generation_settings_are_refused_before_any_work(tmp_path, capsys, overrides, expect):
    cfg = compose_config("generate", [f"out_dir={tmp_path / 'gen'}", *overrides])
    refused(run_generation, cfg, capsys, expect)
    assert not (tmp_path / "gen").exists()  # nothing written: no parent relaxed, no force call


@pytest.fixture(scope="module")
def spectra(tmp_path_factory):
    from defectnet.data.cache import load_cache

    ds = load_cache(DEMO_CACHE)
    i = ds.parent_ids.index("zincblende-GaAs")
    folder = tmp_path_factory.mktemp("spectra")
    for name in ("pristine", "doped"):
        np.savetxt(folder / f"{name}.txt", np.c_[ds.grid.energies, getattr(ds, name)[i].numpy()])
    return folder


@pytest.mark.parametrize(
    "overrides,expect",
    [
        (["candidates=[Zn]", "interval=1.5"], "interval=1.5"),
        (["candidates=[Zn]", "interval=0"], "interval=0"),
        (["candidates=[Ga,Zn]"], "candidates: Ga is in the host GaAs"),
        (["candidates=[Zn]", "references=/no/such/folder"], "references=/no/such/folder: no such"),
        (["candidates=[Zn]", "host=Ga2As-x"], "host formula 'Ga2As-x': not a chemical formula"),
        (["candidates=[Zn]", "resolution=-3"], "resolution=-3"),
        (["candidates=[Zn]", "noise_level=3"], "noise_level=3: the spectrum's counting noise"),
        (["candidates=[Zn]", "noise_level=abc"], "noise_level=abc"),
    ],
)
def test_prediction_settings_are_refused_before_any_file_is_read(
    spectra, tmp_path, capsys, overrides, expect
):
    cfg = compose_config(
        "predict",
        [
            f"doped={spectra / 'doped.txt'}",
            f"pristine={spectra / 'pristine.txt'}",
            "host=GaAs",
            *overrides,
        ],
    )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "out")
    refused(predict, cfg, capsys, expect)
    assert not (tmp_path / "out").exists()


def test_a_bare_candidate_symbol_is_taken_as_a_list(spectra, tmp_path):
    cfg = compose_config(
        "predict",
        [
            f"doped={spectra / 'doped.txt'}",
            f"pristine={spectra / 'pristine.txt'}",
            "host=GaAs",
            "candidates=Ge",
            "references=none",
        ],
    )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "out")
    assert [r["dopant"] for r in predict(cfg)["dopants"]] == ["Ge"]


def test_references_are_found_by_composition_not_file_name(spectra, tmp_path, capsys):
    import json
    import shutil

    from defectnet.cli import ROOT_DIR
    from defectnet.data.references import references_for_host

    source = ROOT_DIR / "data" / "pretrain" / "references"
    folder = tmp_path / "refs"
    folder.mkdir()
    ref = json.loads((source / "rocksalt-KCl.json").read_text())
    ref["parent_id"] = "mp-23193"  # a host named after its structure file
    ref["formula"] = "KCl"
    (folder / "mp-23193.json").write_text(json.dumps(ref))
    assert references_for_host(folder, "KCl")["parent_id"] == "mp-23193"
    shutil.copy(source / "rocksalt-KI.json", folder)
    cfg = compose_config(
        "predict",
        [
            f"doped={spectra / 'doped.txt'}",
            f"pristine={spectra / 'pristine.txt'}",
            "host=GaAs",
            "candidates=[Zn]",
            f"references={folder}",
        ],
    )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "out")
    line = refused(predict, cfg, capsys, "no single-dopant references for host GaAs among its 2")
    assert "mp-23193" in line and "references=none" in line


@pytest.mark.parametrize(
    "overrides,expect",
    [
        (["model.optimizer.lr=abc"], "model.optimizer.lr=abc"),
        (["model.optimizer.lr=0"], "model.optimizer.lr=0"),
        (["data.batch_size=0"], "data.batch_size=0"),
    ],
)
def test_training_settings_are_refused_before_a_step(tmp_path, capsys, overrides, expect):
    cfg = compose_config("train", ["experiment=demo", "logger=none", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    refused(train, cfg, capsys, expect)
    assert not list((tmp_path / "run").glob("**/*.ckpt"))


def test_unknown_reference_levels_are_refused_before_a_step(tmp_path, capsys):
    overrides = ["experiment=quickstart", "logger=none", "model.model.levels=[dilute,sparse]"]
    cfg = compose_config("train", overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    refused(train, cfg, capsys, "model.model.levels: ['dilute', 'sparse']")
    assert not list((tmp_path / "run").glob("**/*.ckpt"))


class Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def test_truncated_or_unsafe_checkpoints_are_refused_unread(pretrained, tmp_path, capsys):
    truncated = tmp_path / "last.ckpt"
    truncated.write_bytes(pretrained.read_bytes()[:3000])
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "defectnet": Payload()}, unsafe)
    for path, expect in (
        (truncated, "truncated or not one"),
        (unsafe, "refused unread"),
        (tmp_path / "none.ckpt", "no such checkpoint"),
    ):
        cfg = compose_config("train", ["experiment=demo", "logger=none", f"ckpt_path={path}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        refused(train, cfg, capsys, expect)
    assert "payload ran" not in capsys.readouterr().out
