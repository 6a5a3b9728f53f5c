"""Console entry points. Hydra reads the configuration from the repository's ``conf/``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("defectnet")


def run_generation(cfg: DictConfig) -> dict:
    """``stage``: generate this shard, consolidate all shards into the cache, or both."""
    from defectnet.data.cache import consolidate, save_cache
    from defectnet.datagen.pipeline import grid_from_config, run_shard

    out: dict = {}
    if cfg.stage == "list_parents":
        from hydra.utils import instantiate

        for p in instantiate(cfg.parents).parents():
            print(p.id)
        return out
    if cfg.stage in ("generate", "all"):
        out["generate"] = run_shard(cfg)
        log.info("shard %s/%s: %s", cfg.shard, cfg.num_shards, out["generate"])
    if cfg.stage in ("consolidate", "all"):
        ds, report = consolidate(Path(cfg.out_dir) / "records", grid_from_config(cfg))
        save_cache(ds, Path(cfg.cache))
        out["consolidate"] = report
        log.info("cache %s: %d samples from %d parents; %d failed %s", cfg.cache, report["ok"],
                 len(ds.parents), report["failed"], json.dumps(report["failures"]))
    if cfg.stage not in ("generate", "consolidate", "all"):
        raise ValueError(f"stage='{cfg.stage}': choose generate, consolidate, all or list_parents.")
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
def generate(cfg: DictConfig) -> None:
    run_generation(cfg)


if __name__ == "__main__":
    generate()
