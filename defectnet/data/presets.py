"""A generation preset's records read back as a data set: how benchmarks compare the sets
that different presets made of the same cells or parents. Call inside an initialised Hydra
config (a ``@hydra.main`` script, or ``initialize_config_dir(CONF_DIR)``)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra import compose

from defectnet.data.cache import PDoSDataset, consolidate
from defectnet.datagen.records import read_shards
from defectnet.datagen.settings import made_like

log = logging.getLogger("defectnet")


def records_dir(preset: str) -> Path:
    """Where ``generate=<preset>`` writes its records."""
    return (
        Path(compose(config_name="generate", overrides=[f"generate={preset}"]).out_dir) / "records"
    )


def preset_dataset(preset: str) -> PDoSDataset:
    """The preset's records as a data set, checked as ``stage=consolidate`` checks them."""
    gen = compose(config_name="generate", overrides=[f"generate={preset}"])
    ds, report = consolidate(records_dir(preset), made_like(gen))
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
