"""Console entry points. Hydra reads the configuration from ``defectnet.conf``: the checkout's
``conf/`` (editable install) or its copy inside an installed wheel."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from defectnet.errors import UserError

ROOT_DIR = Path(__file__).resolve().parent.parent  # the checkout, when running from one
CONF_DIR = str(resources.files("defectnet.conf"))
log = logging.getLogger("defectnet")


def root_dir() -> str:
    """``paths.root_dir``, where outputs go: DEFECTNET_ROOT, else the checkout the package runs
    from (wherever the command is started), else — an installed wheel — the working folder."""
    if "DEFECTNET_ROOT" in os.environ:
        return os.environ["DEFECTNET_ROOT"]
    if (ROOT_DIR / "pyproject.toml").is_file():
        return str(ROOT_DIR)
    return os.getcwd()


def data_dir() -> str:
    """``paths.data_dir``: DEFECTNET_DATA, else the shipped data sets (the checkout's ``data/``
    or their copy inside an installed wheel)."""
    return os.environ.get("DEFECTNET_DATA", str(resources.files("defectnet.datasets")))


OmegaConf.register_new_resolver("defectnet_root", root_dir, replace=True)
OmegaConf.register_new_resolver("defectnet_data", data_dir, replace=True)


# A user's mistake: a bad file or config value (UserError), a file or folder that is missing or
# not writable, a mandatory setting left out (???).
USER_ERRORS = (UserError, FileNotFoundError, PermissionError, MissingMandatoryValue)


def reports_user_errors(command: str):
    """Run a console command so that a user's mistake is one line on stderr and exit code 2,
    with no traceback (``HYDRA_FULL_ERROR=1`` shows it); any other exception is a bug and
    keeps its traceback."""

    def wrap(task):
        @functools.wraps(task)
        def run(cfg: DictConfig):
            try:
                return task(cfg)
            except USER_ERRORS as exc:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                if isinstance(exc, MissingMandatoryValue):
                    key = exc.full_key
                    message = (
                        f"{key}: a required setting is missing; pass {key}=... on the command line."
                    )
                else:
                    message = " ".join(str(exc).split())
                print(f"defectnet-{command}: error: {message}", file=sys.stderr)
                raise SystemExit(2) from None

        return run

    return wrap


def calculator_config(name: str) -> DictConfig:
    """The calculator config group entry ``conf/calculator/<name>.yaml``."""
    path = Path(CONF_DIR) / "calculator" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise UserError(f"calculators: no calculator '{name}'; choose among {known}.")
    return OmegaConf.load(path)


def run_generation(cfg: DictConfig) -> dict:
    """``stage``: generate this shard, consolidate all shards into the cache, or both."""
    from defectnet.data.cache import consolidate, save_cache
    from defectnet.datagen.pipeline import (
        grid_from_config,
        make_references,
        prepare_parents,
        run_shard,
        settings_hash,
    )

    out: dict = {}
    if cfg.stage == "list_parents":
        from hydra.utils import instantiate

        for p in instantiate(cfg.parents).parents():
            print(p.id)
        return out
    if cfg.stage == "parents":
        out["parents"] = prepare_parents(cfg)
        log.info("parents of shard %s/%s: %s", cfg.shard, cfg.num_shards, out["parents"])
        return out
    if cfg.stage == "references":
        out["references"] = make_references(cfg)
        log.info(
            "single-dopant references of shard %s/%s: %s",
            cfg.shard,
            cfg.num_shards,
            out["references"],
        )
        return out
    if cfg.stage in ("generate", "all", "shard"):
        out["generate"] = run_shard(cfg)
        log.info("shard %s/%s: %s", cfg.shard, cfg.num_shards, out["generate"])
    if cfg.stage == "shard":  # a shard's samples, then its parents' single-dopant references
        out["references"] = make_references(cfg)
        log.info("single-dopant references of shard %s: %s", cfg.shard, out["references"])
        return out
    if cfg.stage == "all" and cfg.num_shards > 1:
        log.info(
            "shard %s of %s done; once every shard is, merge them with stage=consolidate",
            cfg.shard,
            cfg.num_shards,
        )
    elif cfg.stage in ("consolidate", "all"):
        run = {
            "settings_hash": settings_hash(cfg),
            "grid": grid_from_config(cfg),
            "fwhm_mev": float(cfg.spectra.fwhm_mev),
            "weighting": cfg.spectra.get("weighting", "total"),
        }
        ds, report = consolidate(Path(cfg.out_dir) / "records", run)
        save_cache(ds, Path(cfg.cache))
        out["consolidate"] = report
        log.info(
            "cache %s: %d samples from %d parents; %d failed %s",
            cfg.cache,
            report["ok"],
            len(ds.parents),
            report["failed"],
            json.dumps(report["failures"]),
        )
    if cfg.stage not in ("generate", "consolidate", "all"):
        raise UserError(
            f"stage='{cfg.stage}': choose parents, references, generate, shard, consolidate, "
            "all or list_parents."
        )
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
@reports_user_errors("generate")
def generate(cfg: DictConfig) -> None:
    run_generation(cfg)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@reports_user_errors("train")
def train(cfg: DictConfig) -> float | None:
    """Returns the value of ``optimized_metric`` for Hydra sweepers."""
    from defectnet.training import train as run_training

    metrics = run_training(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
@reports_user_errors("evaluate")
def evaluate(cfg: DictConfig) -> None:
    from defectnet.evaluation import evaluate as run_evaluation

    metrics = run_evaluation(cfg)
    print(json.dumps(metrics, indent=2))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
@reports_user_errors("predict")
def predict(cfg: DictConfig) -> None:
    from defectnet.predict import predict as run_prediction

    run_prediction(cfg)
