"""A generation preset's records read back as a data set: how benchmarks compare the sets
that different presets made of the same cells or parents. Call inside an initialised Hydra
config (a ``@hydra.main`` script, or ``initialize_config_dir(CONF_DIR)``)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig

from defectnet.data.cache import PDoSDataset, consolidate
from defectnet.datagen.records import read_shards
from defectnet.datagen.settings import made_like

log = logging.getLogger("defectnet")


def _generate_config(preset: str) -> DictConfig:
    return compose(config_name="generate", overrides=[f"generate={preset}"])


def _records_dir(gen: DictConfig) -> Path:
    return Path(gen.out_dir) / "records"


def records_dir(preset: str) -> Path:
    """Where ``generate=<preset>`` writes its records."""
    return _records_dir(_generate_config(preset))


def preset_dataset(preset: str) -> PDoSDataset:
    """The preset's records as a data set, checked as ``stage=consolidate`` checks them."""
    gen = _generate_config(preset)
    ds, report = consolidate(_records_dir(gen), made_like(gen))
    log.info(
        "%s: %d samples from %d parents (%d failed)",
        preset,
        report["ok"],
        len(ds.parents),
        report["failed"],
    )
    return ds


def unconverged_samples(preset: str) -> set[str]:
    """The samples whose relaxation stopped at its step limit, short of its force or stress
    tolerance: their phonons are of a structure away from equilibrium."""
    return {
        r.sample_id
        for r in read_shards(records_dir(preset))
        if r.status == "ok" and not (r.relax or {}).get("converged", True)
    }
