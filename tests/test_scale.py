"""Scale-out through Hydra's engines: joblib shards, submitit jobs, an Optuna sweep."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from defectnet.cli import ROOT_DIR
from defectnet.data.cache import load_cache
from defectnet.datagen.records import read_shards
from tests.conftest import TINY_SI

GENERATE = [sys.executable, str(ROOT_DIR / "scripts" / "generate.py")]


def _run(cmd: list[str], cwd) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_joblib_shards_in_parallel_equal_one_process(tmp_path):
    tiny = [*TINY_SI, "samples_per_parent=4"]
    parallel, single = tmp_path / "parallel", tmp_path / "single"
    _run(
        [
            *GENERATE,
            "-m",
            f"out_dir={parallel}",
            *tiny,
            "num_shards=2",
            "shard=0,1",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path / 'sw'}",
        ],
        tmp_path,
    )
    assert sorted(p.name for p in (parallel / "records").iterdir()) == [
        "shard-0000-of-0002.jsonl.gz",  # finished shards are compressed
        "shard-0001-of-0002.jsonl.gz",
    ]
    _run([*GENERATE, f"out_dir={parallel}", *tiny, "stage=consolidate"], tmp_path)
    _run([*GENERATE, f"out_dir={single}", *tiny], tmp_path)
    a = load_cache(parallel / "dataset.safetensors")
    b = load_cache(single / "dataset.safetensors")
    assert len(a) == len(b) == 4
    for name in ("composition", "mask", "targets"):  # the same samples …
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("pristine", "doped"):  # … and spectra equal to float32 force noise: the default
        # potential runs in float32, and its sums differ in the last bits between processes
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=2e-4 * a.doped.max())
    # a finished shard does nothing when run again
    again = _run([*GENERATE, f"out_dir={parallel}", *tiny, "num_shards=2", "shard=1"], tmp_path)
    assert "already done" in again.stderr + again.stdout


@pytest.mark.slow
def test_submitit_slurm_config_composes_and_local_executor_runs_a_shard(tmp_path):
    shown = _run(
        [
            *GENERATE,
            "generate=paper",
            "num_shards=400",
            "hydra/launcher=slurm_generate",
            "hydra.launcher.partition=cpu",
            "--cfg",
            "hydra",
        ],
        tmp_path,
    )
    launcher = yaml.safe_load(shown.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "cpu" and launcher["cpus_per_task"] == 8
    job = _run([*GENERATE, "generate=paper", "--cfg", "job"], tmp_path)
    assert yaml.safe_load(job.stdout)["num_parents"] == 2000

    out = tmp_path / "local"
    _run(
        [
            *GENERATE,
            "-m",
            f"out_dir={out}",
            *TINY_SI,
            "num_shards=2",
            "shard=1",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            f"hydra.sweep.dir={tmp_path / 'sw'}",
        ],
        tmp_path,
    )
    records = read_shards(out / "records")
    assert len(records) == 1 and records[0].status == "ok"


@pytest.mark.slow
def test_optuna_sweep_of_two_trials_on_the_demo_set(tmp_path):
    _run(
        [
            sys.executable,
            str(ROOT_DIR / "train.py"),
            "-m",
            "hparams_search=optuna",
            "experiment=demo",
            "debug=fdr",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={tmp_path}",
        ],
        tmp_path,
    )
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert np.isfinite(best["best_value"])
    assert len(list(tmp_path.glob("*/metrics.json"))) == 2
