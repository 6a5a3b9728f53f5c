"""A record once written is never lost: resume cuts only a torn tail, consolidate names what it
skips and never replaces a cache by a smaller one, and a kill in the middle of a write (of a
record or of the cache) leaves every sample exactly once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from defectnet.cli import run_generation
from defectnet.data.cache import load_cache
from defectnet.datagen.records import Provenance, Record, RecordShard, read_shards
from defectnet.datagen.settings import made_like
from defectnet.errors import UserError
from defectnet.spectra import EnergyGrid

SHARD = "shard-0000-of-0001.jsonl"


def ok_record(index: int, settings_hash: str) -> Record:
    """A complete sample as generation writes it (spectra on the default grid)."""
    rng = np.random.default_rng(index)
    provenance = Provenance("diamond-Si", "Si", {}, {}, settings_hash, [0, index], "0")
    composition = [0.0] * 100
    composition[13] = 1.0
    return Record(
        f"diamond-Si/{index}",
        index,
        provenance,
        n_atoms=64,
        counts={"Ge": 1},
        concentrations={"Ge": 1 / 64},
        candidates=[{"dopant": "Ge", "replaces": "Si"}, {"dopant": "C", "replaces": "Si"}],
        distractors=["C"],
        pristine=rng.random(100).round(4).tolist(),
        doped=rng.random(100).round(4).tolist(),
        spectra={"grid": EnergyGrid().as_dict(), "fwhm_mev": 3.0, "weighting": "total"},
        composition=composition,
    )


def consolidate(cfg, **overrides) -> dict:
    """``stage=consolidate`` of ``cfg`` with ``overrides``."""
    cfg = cfg.copy()
    cfg.stage = "consolidate"
    for key, value in overrides.items():
        cfg[key] = value
    return run_generation(cfg)


def lines(n: int, settings_hash: str) -> list[bytes]:
    return [(json.dumps(ok_record(i, settings_hash).to_dict()) + "\n").encode() for i in range(n)]


@pytest.fixture
def records(generate_cfg):
    """A config, its records folder and a writer of shard files in it."""
    cfg = generate_cfg()
    folder = Path(cfg.out_dir) / "records"
    folder.mkdir(parents=True)
    return cfg, folder, made_like(cfg)["settings_hash"]


def test_a_malformed_middle_line_stops_the_resume_and_leaves_the_file_as_it_is(records):
    _, folder, h = records
    body = lines(10, h)
    body[4] = b'{"sample_id": "diamond-Si/4", "oops\n'
    path = folder / SHARD
    path.write_bytes(b"".join(body))
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"line 5: not a JSON record.*left as it is"):
        RecordShard(path)
    assert path.read_bytes() == before  # the five good records after it are kept


def test_a_torn_tail_is_the_only_thing_cut_and_the_cut_is_said(records, caplog):
    _, folder, h = records
    path = folder / SHARD
    whole = b"".join(lines(3, h))
    path.write_bytes(whole + b'{"sample_id": "diamond-Si/3", "pri')
    shard = RecordShard(path)
    assert len(shard.records) == 3 and path.read_bytes() == whole
    assert "line 4" in caplog.text and "cut off" in caplog.text


def cached(records, n: int) -> tuple[Path, bytes]:
    """A shard of ``n`` records consolidated: the cache and its bytes."""
    cfg, folder, h = records
    (folder / SHARD).write_bytes(b"".join(lines(n, h)))
    consolidate(cfg)
    cache = Path(cfg.cache)
    return cache, cache.read_bytes()


def test_consolidate_names_a_malformed_last_line_and_keeps_the_old_cache(records):
    cfg, folder, h = records
    cache, before = cached(records, 4)
    (folder / SHARD).write_bytes(b"".join(lines(4, h)) + b"not a record\n")
    with pytest.raises(UserError, match=r"line 5: not a JSON record"):
        consolidate(cfg)
    assert cache.read_bytes() == before


def test_consolidate_counts_torn_tails_and_refuses_a_smaller_cache_unless_forced(records):
    cfg, folder, h = records
    cache, before = cached(records, 5)
    (folder / SHARD).write_bytes(b"".join(lines(4, h)) + b'{"sample_id"')
    with pytest.raises(UserError, match="holds 5 samples, the records 4.*force=true"):
        consolidate(cfg)
    assert cache.read_bytes() == before
    report = consolidate(cfg, force=True)
    assert report["consolidate"]["ok"] == 4
    assert report["consolidate"]["skipped_lines"] == [
        f"{folder / SHARD}, line 5: 12 bytes of a record cut off by a stopped run"
    ]
    assert len(load_cache(cache)) == 4


def test_the_cache_leaves_out_unstable_samples_but_their_records_stay_for_another_limit(records):
    cfg, folder, h = records
    body = []
    for i, fraction in enumerate([0.004, 0.02, 0.05, 0.2]):
        r = ok_record(i, h).to_dict()
        r["phonons"] = {"imaginary_fraction": fraction}
        body.append(json.dumps(r) + "\n")
    (folder / SHARD).write_text("".join(body))
    report = consolidate(cfg, cache_stability={"max_imaginary_fraction": 0.01})["consolidate"]
    assert (report["ok"], report["left_out_unstable"]) == (1, 3)
    assert load_cache(cfg.cache).meta["sample_ids"] == ["diamond-Si/0"]
    report = consolidate(cfg, cache_stability={"max_imaginary_fraction": 0.1})["consolidate"]
    assert (report["ok"], report["left_out_unstable"]) == (3, 1)
    assert len(load_cache(cfg.cache)) == 3
    with pytest.raises(UserError, match="0 failed .*, 4 have more imaginary modes than cache_st"):
        consolidate(cfg, cache_stability={"max_imaginary_fraction": 0.001}, force=True)


def test_cache_parents_fix_a_set_while_its_records_grow(records, caplog):
    cfg, folder, h = records
    body = []
    for i, parent in enumerate(["diamond-Si", "diamond-C", "diamond-Si"]):
        r = ok_record(i, h).to_dict()
        r["sample_id"], r["provenance"]["parent_id"] = f"{parent}/{i}", parent
        body.append(json.dumps(r) + "\n")
    (folder / SHARD).write_text("".join(body))
    assert consolidate(cfg)["consolidate"]["ok"] == 3
    report = consolidate(cfg, cache_parents=["diamond-Si"], force=True)["consolidate"]
    assert report["ok"] == 2 and load_cache(cfg.cache).parents == ["diamond-Si"]
    # a parent not made yet: named in the log and the report, the others cached
    report = consolidate(cfg, cache_parents=["diamond-Si", "zincblende-GaAs"])["consolidate"]
    assert report["ok"] == 2 and report["parents_without_samples"] == 1
    assert "cache_parents names 1 parents without an ok sample in the records (zinc" in caplog.text


KILLED_WRITER = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_records_safety import ok_record
import defectnet.datagen.records as records
real_write = os.write
def half_then_hang(fd, data):
    real_write(fd, data[: len(data) // 2])
    Path({signal!r}).write_text("half written")
    time.sleep(60)
records.os.write = half_then_hang
shard = records.RecordShard(Path({path!r}))
shard.append(ok_record(3, {h!r}))
"""


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the writer never reached the write"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_kill_in_the_middle_of_a_record_write_loses_nothing(records):
    _, folder, h = records
    path, flag = folder / SHARD, folder.parent / "signal"
    path.write_bytes(b"".join(lines(3, h)))
    script = KILLED_WRITER.format(
        tests=str(Path(__file__).parent), signal=str(flag), path=str(path), h=h
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    wait_for(flag, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not path.read_bytes().endswith(b"\n")  # killed with half a record on disk
    shard = RecordShard(path)  # the resume
    shard.append(ok_record(3, h))
    ids = [r.sample_id for r in read_shards(folder)]
    assert ids == [f"diamond-Si/{i}" for i in range(4)]  # every sample exactly once


KILLED_CACHE = """
import sys, time
from pathlib import Path
import safetensors.torch as st
real_save = st.save_file
def half_then_hang(tensors, filename, metadata=None):
    real_save(tensors, filename, metadata=metadata)
    with open(filename, "r+b") as fh:
        fh.truncate(Path(filename).stat().st_size // 2)
    Path({signal!r}).write_text("half written")
    time.sleep(60)
st.save_file = half_then_hang
from defectnet.cli import run_generation
from hydra import compose, initialize_config_dir
from defectnet.cli import CONF_DIR
with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
    cfg = compose("generate", overrides={overrides!r})
run_generation(cfg)
"""


@pytest.mark.slow
def test_a_kill_in_the_middle_of_a_cache_write_keeps_the_old_cache(records, generate_cfg):
    cfg, folder, h = records
    (folder / SHARD).write_bytes(b"".join(lines(3, h)))
    consolidate(cfg)
    cache = Path(cfg.cache)
    before = cache.read_bytes()
    (folder / SHARD).write_bytes(b"".join(lines(5, h)))
    flag = folder.parent / "signal"
    from .conftest import TINY_SI

    overrides = [f"out_dir={cfg.out_dir}", *TINY_SI, "stage=consolidate"]
    script = KILLED_CACHE.format(signal=str(flag), overrides=overrides)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    wait_for(flag, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert cache.read_bytes() == before and len(load_cache(cache)) == 3
    consolidate(cfg)  # run again: the new cache, whole
    assert load_cache(cache).meta["sample_ids"] == [f"diamond-Si/{i}" for i in range(5)]


def test_workers_starting_side_by_side_all_find_the_folder_writable(tmp_path):
    """Shard workers start together on one out_dir: each one's write check must pass (a shared
    probe file made one fail with "cannot write" when another removed it first)."""
    from concurrent.futures import ThreadPoolExecutor

    from defectnet.datagen.shards import check_output_dir

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: check_output_dir(tmp_path), range(400)))
    assert results == [None] * 400
    assert list(tmp_path.iterdir()) == []  # no probe left behind
