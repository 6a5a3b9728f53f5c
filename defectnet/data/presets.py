"""A generation preset's records read back as a data set: how benchmarks compare the sets
that different presets made of the same cells or parents, and how a shipped set, which travels
as its records, gets its cache at first use."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from defectnet.data.cache import PDoSDataset, consolidate, save_cache
from defectnet.datagen.records import read_shards
from defectnet.datagen.settings import made_like
from defectnet.errors import UserError

log = logging.getLogger("defectnet")


def _generate_config(preset: str) -> DictConfig:
    """The preset's generation config, inside a running Hydra app or outside any."""
    overrides = [f"generate={preset}"]
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="generate", overrides=overrides)
        conf = str(resources.files("defectnet.conf"))
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            return compose(config_name="generate", overrides=overrides)
    except MissingConfigException:
        raise UserError(
            f"'{preset}' is not a generation preset: name one of conf/generate/ "
            "(e.g. presence_calibration, realism_central)."
        ) from None


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


def cache_from_records(cache: Path, preset: str) -> None:
    """Write the data set's cache from the records beside it (``records/``), as
    ``defectnet-generate generate=<preset> stage=consolidate`` does: a few seconds for the
    pretraining set, so git and the package carry its records, not a second copy as a cache."""
    gen = _generate_config(preset)
    ds, report = consolidate(cache.parent / "records", made_like(gen))
    save_cache(ds, cache)
    log.info(
        "%s: made from the records of generate=%s: %d samples of %d parents",
        cache,
        preset,
        report["ok"],
        len(ds.parents),
    )


def unconverged_samples(preset: str) -> set[str]:
    """The samples whose relaxation stopped at its step limit, short of its force or stress
    tolerance: their phonons are of a structure away from equilibrium."""
    return {
        r.sample_id
        for r in read_shards(records_dir(preset))
        if r.status == "ok" and not (r.relax or {}).get("converged", True)
    }


def converged_dataset(preset: str) -> PDoSDataset:
    """The preset's data set less the samples whose relaxation did not converge."""
    ds = preset_dataset(preset)
    left_out = unconverged_samples(preset)
    return ds.select([i for i, s in enumerate(ds.meta["sample_ids"]) if s not in left_out])
