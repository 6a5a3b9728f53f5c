"""How a data set is cut into shards.

The plan is a pure function of the config: sample ``i`` belongs to parent ``i // spp`` and draws
its randomness from ``(seed, i)``, so any shard reproduces exactly its part of the data set and a
rerun skips what its shard file already holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from defectnet.datagen.context import Context
from defectnet.datagen.force_pool import ForcePool, force_workers
from defectnet.datagen.parents.base import Parent
from defectnet.datagen.settings import grid_from_config
from defectnet.errors import UserError, instantiate_checked


def plan(cfg: DictConfig, parents: list[Parent]) -> list[tuple[int, Parent]]:
    """Every (sample index, parent) of the data set, in order."""
    spp = int(cfg.samples_per_parent)
    return [(p_i * spp + j, p) for p_i, p in enumerate(parents) for j in range(spp)]


def selected_parents(cfg: DictConfig) -> list[Parent]:
    """The data set's parents, in order: ``include`` first, then the seeded draw."""
    return instantiate(cfg.parents).select(
        cfg.num_parents,
        int(cfg.seed),
        list(cfg.include),
        balance_prototypes=bool(cfg.get("balance_prototypes", False)),
    )


def shard_of(cfg: DictConfig, index: int) -> int:
    """The shard that makes sample ``index``: samples dealt round-robin (``shard_by=sample``,
    every shard touches every parent), or whole parents dealt round-robin (``shard_by=parent``:
    a parent's defect library is built by one shard only, and a shard is finished parent by
    parent)."""
    by = cfg.get("shard_by", "sample")
    if by not in ("sample", "parent"):
        raise UserError(f"shard_by='{by}': choose sample or parent.")
    key = index // int(cfg.samples_per_parent) if by == "parent" else index
    return key % int(cfg.num_shards)


def shard_path(out_dir: Path, shard: int, num_shards: int) -> Path:
    return Path(out_dir) / "records" / f"shard-{shard:04d}-of-{num_shards:04d}.jsonl"


def check_output_dir(out_dir: Path) -> None:
    """Refuse an unwritable ``out_dir`` before any work. The probe is a file of this process's
    own (several workers start side by side on one folder; a shared probe name made one of them
    fail when another removed it first)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PermissionError(
            f"out_dir: cannot write to '{out_dir}' ({exc.strerror}); choose a writable folder "
            "with out_dir=/path/to/folder."
        ) from exc


def check_shard(cfg: DictConfig) -> tuple[int, int]:
    shard, num_shards = int(cfg.shard), int(cfg.num_shards)
    if num_shards < 1:
        raise UserError(f"num_shards={num_shards}: split the work into 1 or more shards.")
    if not 0 <= shard < num_shards:
        raise UserError(f"shard={shard} must lie in [0, num_shards={num_shards}).")
    return shard, num_shards


PRISTINE_SPECTRA = ("sample_cell", "parent_cell")


def check_pristine_spectrum(cfg: DictConfig) -> None:
    choice = cfg.get("pristine_spectrum", "sample_cell")
    if choice not in PRISTINE_SPECTRA:
        raise UserError(
            f"pristine_spectrum={choice}: choose sample_cell (the samples' own supercell, the "
            "default) or parent_cell (the parent's phonon supercell, for data sets made so)."
        )


def make_context(cfg: DictConfig, out_dir: Path, h: str) -> Context:
    processes = force_workers(cfg.get("force_workers", 1))
    forcefield = instantiate(cfg.calculator)
    if processes > 1:  # one torch thread a process: the other cores go to the workers
        torch.set_num_threads(1)
        calculator = OmegaConf.to_container(cfg.calculator, resolve=True)
        forcefield = ForcePool(forcefield, calculator, processes)
    if cfg.get("compile_potential", False):
        forcefield.compile()
    ctx = Context(
        cfg,
        forcefield,
        instantiate_checked(cfg.phonons),
        grid_from_config(cfg),
        out_dir,
        h,
    )
    ctx.phonons.projections = ctx.weighting == "neutron"
    return ctx


def shard_parents(cfg: DictConfig, shard: int, num_shards: int) -> list[Parent]:
    """The data set's parents that belong to this shard: parent ``j`` to shard ``j % n``."""
    return [p for j, p in enumerate(selected_parents(cfg)) if j % num_shards == shard]
