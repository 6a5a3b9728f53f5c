"""Generation end to end: records, resume after a kill, provenance, failures, bad input."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from defectnet.cli import ROOT_DIR, run_generation
from defectnet.data.cache import load_cache
from defectnet.datagen.records import Provenance, Record, RecordShard, compressed, read_shards
from defectnet.datagen.samples import run_shard, sample_structure
from defectnet.datagen.shards import shard_path
from defectnet.elements import UnknownElementError
from defectnet.errors import UserError

from .conftest import TINY_SI


@pytest.mark.slow
def test_generation_end_to_end_then_rerun_does_nothing(generate_cfg):
    cfg = generate_cfg(
        "samples_per_parent=3", "candidates=[Ge,C,Sn]", "sampling.n_distractors=[1,1]"
    )
    out = run_generation(cfg)
    assert out["generate"] == {"planned": 3, "skipped": 0, "ok": 3, "failed": 0}
    records = RecordShard(shard_path(cfg.out_dir, 0, 1)).records
    r = records[0]
    assert r.status == "ok" and r.n_atoms == 8
    assert len(r.pristine) == len(r.doped) == 100 and len(r.composition) == 100
    assert len(r.distractors) == 1 and r.distractors[0] not in r.counts
    prov = r.provenance
    assert prov.parent_id == "diamond-Si" and prov.formula == "Si"
    assert prov.calculator["name"] == "matgl" and prov.seed == [0, r.index]
    assert len(prov.settings_hash) == 16
    ds = load_cache(cfg.cache)
    assert len(ds) == 3 and ds.parents == ["diamond-Si"]
    assert (ds.targets[ds.mask == 0] == 0).all() and ((ds.targets > 0) <= (ds.mask > 0)).all()
    # same config again: everything is skipped, nothing recomputed
    again = run_shard(cfg)
    assert again == {"planned": 3, "skipped": 3, "ok": 0, "failed": 0}
    # split differently into shards: what any shard file holds still counts as done
    resharded = generate_cfg(
        "samples_per_parent=3",
        "candidates=[Ge,C,Sn]",
        "sampling.n_distractors=[1,1]",
        "shard=1",
        "num_shards=2",
    )
    assert run_shard(resharded) == {"planned": 1, "skipped": 1, "ok": 0, "failed": 0}


@pytest.mark.slow
def test_same_seed_same_data(generate_cfg):
    a = generate_cfg("samples_per_parent=2", out="a")
    b = generate_cfg("samples_per_parent=2", out="b")
    run_shard(a), run_shard(b)
    ra = RecordShard(shard_path(a.out_dir, 0, 1)).records
    rb = RecordShard(shard_path(b.out_dir, 0, 1)).records
    assert [r.counts for r in ra] == [r.counts for r in rb]
    assert np.allclose([r.doped for r in ra], [r.doped for r in rb], atol=1e-4)


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_repeating(generate_cfg, tmp_path):
    overrides = ["samples_per_parent=6", "candidates=[Ge,C,Sn,Al,P]"]
    cfg = generate_cfg(*overrides)
    path = shard_path(cfg.out_dir, 0, 1)
    cmd = [
        sys.executable,
        str(ROOT_DIR / "scripts" / "generate.py"),
        f"out_dir={cfg.out_dir}",
        *TINY_SI,
        *overrides,
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = path.read_bytes()
    done_before = before.count(b"\n")
    assert 2 <= done_before < 6, "the run should have been killed part-way"
    parent_file = cfg.out_dir + "/parents/diamond-Si.json"
    parent_mtime = os.path.getmtime(parent_file)

    stats = run_shard(cfg)
    assert stats["skipped"] == done_before and stats["ok"] == 6 - done_before
    assert not path.exists()  # finished: folded into the compressed shard
    after = gzip.decompress(compressed(path).read_bytes())
    assert after.startswith(before.rsplit(b"\n", 1)[0])  # finished lines kept byte for byte
    ids = [json.loads(line)["sample_id"] for line in after.splitlines()]
    assert len(ids) == len(set(ids)) == 6
    assert os.path.getmtime(parent_file) == parent_mtime  # parent work not redone


def failed_record(index: int) -> Record:
    provenance = Provenance("a", "Si", {}, {}, "0" * 16, [0, index], "0")
    return Record(f"a/{index}", index, provenance, status="failed", reason="test")


def test_torn_last_line_is_cut_on_resume(tmp_path):
    path = tmp_path / "shard-0000-of-0001.jsonl"
    first = (json.dumps(failed_record(0).to_dict()) + "\n").encode()
    path.write_bytes(first + b'{"sample_id": "a/1", "pri')
    shard = RecordShard(path)
    assert shard.done == {"a/0"} and path.read_bytes() == first
    path.write_bytes(first + b'{"sample_id": "a/1"}\n')
    with pytest.raises(UserError, match="line 2: not a DefectNet record"):
        read_shards(tmp_path)


def test_a_compressed_shard_takes_more_records_and_folds_them_in(tmp_path):
    path = tmp_path / "shard-0000-of-0001.jsonl"
    shard = RecordShard(path)
    shard.append(failed_record(0))
    shard.compress()
    assert not path.exists() and compressed(path).exists()
    first = compressed(path).read_bytes()
    RecordShard(path).compress()
    assert compressed(path).read_bytes() == first  # byte-reproducible (no timestamp)
    more = RecordShard(path)
    more.append(failed_record(1))
    assert path.exists() and RecordShard(path).done == {"a/0", "a/1"}
    more.compress()
    assert [r.sample_id for r in read_shards(tmp_path)] == ["a/0", "a/1"]


def test_failed_sample_is_recorded_with_its_reason(generate_cfg):
    cfg = generate_cfg("supercell.min_atoms=9", "supercell.max_atoms=9")
    stats = run_shard(cfg)
    assert stats["failed"] == 2 and stats["ok"] == 0
    records = RecordShard(shard_path(cfg.out_dir, 0, 1)).records
    assert all(r.status == "failed" and "widen supercell.min_atoms" in r.reason for r in records)


def test_changed_settings_refuse_to_mix_into_old_records(generate_cfg):
    run_shard(generate_cfg("samples_per_parent=1"))
    with pytest.raises(ValueError, match="restore that config to resume"):
        run_shard(generate_cfg("samples_per_parent=1", "spectra.fwhm_mev=5.0"))


def test_bad_inputs_give_clear_errors(generate_cfg, tmp_path):
    with pytest.raises(UnknownElementError, match="candidates: 'Xx'"):
        run_shard(generate_cfg("candidates=[Xx]"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="out_dir: cannot write"):
        run_shard(generate_cfg(out="a-file/sub"))
    with pytest.raises(ValueError, match="shard=2 must lie"):
        run_shard(generate_cfg("shard=2", "num_shards=2"))


def test_embedded_phonons_in_the_pipeline_record_their_cost(generate_cfg):
    cfg = generate_cfg("phonons=embedded", "phonons.cutoff=3.0", "samples_per_parent=1")
    assert run_shard(cfg)["ok"] == 1
    (r,) = RecordShard(shard_path(cfg.out_dir, 0, 1)).records
    assert r.provenance.phonons["method"] == "embedded"
    assert r.provenance.phonons["cutoff"] == 3.0
    assert r.phonons["host_displacements"] >= 1
    assert 0 < r.phonons["n_displacements"] < 6 * r.n_atoms


@pytest.mark.slow
def test_neutron_weighted_spectra_need_and_get_eigenvectors(generate_cfg):
    from defectnet.datagen.settings import settings_hash

    total = generate_cfg("samples_per_parent=1", "candidates=[Ge]", out="total")
    neutron = generate_cfg(
        "samples_per_parent=1", "candidates=[Ge]", "spectra.weighting=neutron", out="neutron"
    )
    assert settings_hash(total) != settings_hash(neutron)
    run_shard(total), run_shard(neutron)
    (a,) = RecordShard(shard_path(total.out_dir, 0, 1)).records
    (b,) = RecordShard(shard_path(neutron.out_dir, 0, 1)).records
    # pure Si: weighting changes nothing; with Ge (σ/M 0.12 vs Si's 0.077 barn/u) it does
    # (float32 potential: two relaxations of the same cell agree to ~1e-4 of the peak height)
    assert np.abs(np.subtract(a.pristine, b.pristine)).max() < 5e-4 * max(a.pristine)
    assert not np.allclose(a.doped, b.doped, atol=1e-4)


def test_record_round_trips_its_relaxed_structure_and_spectra_settings(generate_cfg):
    from defectnet.datagen.context import atoms_from_dict, atoms_to_dict

    cfg = generate_cfg("samples_per_parent=1", "candidates=[Ge]")
    run_shard(cfg)
    (r,) = RecordShard(shard_path(cfg.out_dir, 0, 1)).records
    atoms = atoms_from_dict(r.structure)
    assert atoms.get_chemical_formula() == r.doped_formula and len(atoms) == r.n_atoms
    assert atoms_to_dict(atoms, decimals=5) == r.structure
    # relaxed: the Ge site pushes its neighbours off the ideal diamond positions
    ideal = np.round(np.array(r.structure["positions"]) / (atoms.cell[0, 0] / 4), 0)
    assert not np.allclose(atoms.positions, ideal * atoms.cell[0, 0] / 4, atol=1e-4)
    assert r.spectra == {
        "grid": {"e_min": 0.0, "e_max": 200.0, "n_points": 100, "unit": "meV"},
        "fwhm_mev": 3.0,
        "weighting": "total",
    }


def test_consolidate_refuses_records_made_on_another_grid_or_settings(generate_cfg):
    from defectnet.data.cache import CacheError

    cfg = generate_cfg("samples_per_parent=1", "stage=generate")
    run_generation(cfg)
    with pytest.raises(CacheError, match=r"spectra\.e_max is 200\.0 in the records, 300\.0") as err:
        run_generation(
            generate_cfg("samples_per_parent=1", "stage=consolidate", "spectra.e_max=300")
        )
    assert "consolidate with spectra.e_max=200.0" in str(err.value)
    with pytest.raises(CacheError, match=r"spectra\.fwhm_mev is 3\.0 in the records"):
        run_generation(
            generate_cfg("samples_per_parent=1", "stage=consolidate", "spectra.fwhm_mev=5")
        )
    with pytest.raises(CacheError, match="consolidate with the config the records were made with"):
        run_generation(generate_cfg("samples_per_parent=1", "stage=consolidate", "relax.fmax=0.05"))
    assert not (Path(cfg.out_dir) / "dataset.safetensors").exists()
    run_generation(generate_cfg("samples_per_parent=1", "stage=consolidate"))
    assert load_cache(cfg.cache).grid.e_max == 200.0


def test_records_of_the_older_format_still_consolidate_under_their_settings(generate_cfg):
    cfg = generate_cfg("samples_per_parent=2", "stage=generate")
    run_generation(cfg)
    path = shard_path(cfg.out_dir, 0, 1)
    old = RecordShard(path).records
    old = [r.to_dict() for r in old]
    for r in old:  # records written before they carried their structure and spectra settings
        del r["structure"], r["spectra"]
    compressed(path).unlink()  # and before finished shards were compressed
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    run_generation(generate_cfg("samples_per_parent=2", "stage=consolidate"))
    assert len(load_cache(cfg.cache)) == 2
    with pytest.raises(ValueError, match="made with settings"):
        run_generation(
            generate_cfg("samples_per_parent=2", "stage=consolidate", "spectra.e_max=300")
        )


@pytest.mark.slow
def test_superposed_phonons_in_the_pipeline_cost_no_call_per_sample(generate_cfg):
    cfg = generate_cfg(
        "phonons=superposed",
        "phonons.cutoff=3.0",
        "phonons.patch_atoms=[16,16]",
        "samples_per_parent=4",
        "candidates=[Ge,C]",
        "sampling.undoped_fraction=0.5",
    )
    assert run_shard(cfg)["ok"] == 4
    records = RecordShard(shard_path(cfg.out_dir, 0, 1)).records
    parent = json.loads((Path(cfg.out_dir) / "parents" / "diamond-Si.json").read_text())
    for r in records:
        assert r.provenance.phonons["method"] == "superposed"
        assert r.phonons["n_displacements"] == 0 and r.relax["steps"] == 0
        assert r.phonons["library_calls"] > 0
        atoms = sample_structure(r, parent)  # rebuilt from the host and the record's sites
        assert atoms.get_chemical_formula() == r.doped_formula and len(atoms) == r.n_atoms
    undoped = [r for r in records if not r.counts]
    assert 0 < len(undoped) < len(records)
    for r in undoped:  # nothing in it: every offered candidate a distractor, spectra equal
        assert r.distractors and len(r.candidates) == len(r.distractors)
        np.testing.assert_allclose(r.doped, r.pristine, rtol=1e-5, atol=1e-7)
    assert (Path(cfg.out_dir) / "library" / "diamond-Si.safetensors").is_file()
    # a library of other settings is the user's mistake: the run stops, no sample is recorded
    other = generate_cfg(
        "phonons=superposed",
        "phonons.cutoff=2.5",
        "phonons.patch_atoms=[16,16]",
        "candidates=[Ge,C]",
        out="other",
    )
    shutil.copytree(Path(cfg.out_dir) / "library", Path(other.out_dir) / "library")
    with pytest.raises(UserError, match="defect library made with other settings"):
        run_shard(other)
    assert not read_shards(Path(other.out_dir) / "records")


def test_samples_beyond_the_imaginary_limit_fail_with_the_reason():
    from omegaconf import OmegaConf

    from defectnet.datagen.phonons import Modes
    from defectnet.datagen.samples import UnstableSample, check_stability

    energies = np.array([-10.0, -1.0, 20.0, 30.0] * 25)
    modes = Modes(energies, np.ones_like(energies), 0, 33)
    keep_all = OmegaConf.create({"imaginary_tolerance_mev": 3.0, "max_imaginary_fraction": None})
    assert check_stability(modes, keep_all) == pytest.approx(0.25)
    strict = OmegaConf.create({"imaginary_tolerance_mev": 3.0, "max_imaginary_fraction": 0.01})
    with pytest.raises(UnstableSample, match=r"25\.0% of modes imaginary beyond -3 meV"):
        check_stability(modes, strict)
