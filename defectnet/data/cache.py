"""One tensor file per data set: what training reads instead of thousands of records.

Stored with safetensors (no pickle): float32 tensors ``pristine``, ``doped``, ``composition``
[N, 100]; ``mask`` and ``targets`` [N, 56]; ``parent_index`` [N] into the parent list kept in the
metadata, which also holds the energy grid, provenance and the format version.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from defectnet.atomic import atomic_path
from defectnet.datagen.records import Record, read_shards
from defectnet.elements import (
    DOPANTS,
    N_COMPOSITION,
    N_DOPANTS,
    candidate_vector,
    concentration_vector,
)
from defectnet.errors import UserError
from defectnet.spectra import EnergyGrid

FORMAT_VERSION = "1"
SPECTRAL_KEYS = ("pristine", "doped", "composition")


# metadata lists with one entry per sample (the rest describes the whole data set)
PER_SAMPLE_META = ("sample_ids", "n_atoms")


class CacheError(UserError):
    """A cache file that is missing, corrupt, or of another format version."""


@dataclass
class PDoSDataset:
    """The cached data set in memory (torch tensors) and its metadata."""

    pristine: torch.Tensor
    doped: torch.Tensor
    composition: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor
    parent_index: torch.Tensor
    parents: list[str]
    grid: EnergyGrid
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.targets.shape[0]

    @property
    def parent_ids(self) -> list[str]:
        return [self.parents[i] for i in self.parent_index.tolist()]

    def inputs(self) -> torch.Tensor:
        """[N, 3, 100]: pristine PDoS, doped PDoS, host composition."""
        return torch.stack([self.pristine, self.doped, self.composition], dim=1)

    def select(self, rows: list[int]) -> PDoSDataset:
        """The samples ``rows`` (in that order) as a data set of their own: its parents are
        those the rows hold, and per-sample metadata is cut to the rows."""
        index = torch.as_tensor(rows, dtype=torch.int64)
        held = sorted({self.parents[i] for i in self.parent_index[index].tolist()})
        remap = torch.tensor([held.index(p) if p in held else -1 for p in self.parents])
        meta = {
            k: [v[i] for i in rows] if k in PER_SAMPLE_META else v for k, v in self.meta.items()
        }
        return PDoSDataset(
            pristine=self.pristine[index],
            doped=self.doped[index],
            composition=self.composition[index],
            mask=self.mask[index],
            targets=self.targets[index],
            parent_index=remap[self.parent_index[index]],
            parents=held,
            grid=self.grid,
            meta=meta,
        )


def save_cache(ds: PDoSDataset, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: getattr(ds, k).contiguous()
        for k in ("pristine", "doped", "composition", "mask", "targets", "parent_index")
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "parents": json.dumps(ds.parents),
        "grid": json.dumps(ds.grid.as_dict()),
        "dopants": json.dumps(list(DOPANTS)),
        "info": json.dumps(ds.meta),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_cache(path: Path) -> PDoSDataset:
    """Load and validate a cache file; every problem names the file and the fix."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CacheError(
            f"{path}: no such data set file; generate it with defectnet-generate "
            "or point data.path at an existing .safetensors cache."
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CacheError(
            f"{path}: not a readable safetensors cache ({exc}); the file is "
            "corrupt or truncated: regenerate it with defectnet-generate "
            "stage=consolidate."
        ) from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CacheError(
            f"{path}: cache format version {version!r}, this DefectNet reads "
            f"{FORMAT_VERSION!r}; rebuild it with defectnet-generate stage=consolidate."
        )
    if json.loads(meta.get("dopants", "[]")) != list(DOPANTS):
        raise CacheError(
            f"{path}: its dopant vocabulary differs from defectnet.elements.DOPANTS; "
            "rebuild the cache."
        )
    missing = {"pristine", "doped", "composition", "mask", "targets", "parent_index"} - set(tensors)
    if missing:
        raise CacheError(f"{path}: tensors {sorted(missing)} are missing; rebuild the cache.")
    n = tensors["targets"].shape[0]
    grid = EnergyGrid(**{k: v for k, v in json.loads(meta["grid"]).items() if k != "unit"})
    for k in SPECTRAL_KEYS:
        width = grid.n_points if k != "composition" else N_COMPOSITION
        if tuple(tensors[k].shape) != (n, width):
            raise CacheError(
                f"{path}: tensor '{k}' has shape {tuple(tensors[k].shape)}, "
                f"expected ({n}, {width})."
            )
    for k in ("mask", "targets"):
        if tuple(tensors[k].shape) != (n, N_DOPANTS):
            raise CacheError(
                f"{path}: tensor '{k}' has shape {tuple(tensors[k].shape)}, "
                f"expected ({n}, {N_DOPANTS})."
            )
    return PDoSDataset(
        **tensors,
        parents=json.loads(meta["parents"]),
        grid=grid,
        meta=json.loads(meta.get("info", "{}")),
    )


def check_made_like(records: list[Record], records_dir: Path, run: dict) -> None:
    """Refuse records whose spectra or settings differ from the run's config.

    ``run`` holds the config's ``settings_hash``, ``grid``, ``fwhm_mev`` and ``weighting``.
    Records say how their spectra were made; older records that do not are checked through the
    settings hash alone, which covers the ``spectra`` section.
    """
    grid = run["grid"]
    for r in records:
        made = r.spectra
        if made is not None:
            theirs = EnergyGrid(**{k: v for k, v in made["grid"].items() if k != "unit"})
            for key in ("e_min", "e_max", "n_points"):
                if getattr(theirs, key) != getattr(grid, key):
                    raise CacheError(
                        f"{records_dir} record {r.sample_id}: spectra.{key} is "
                        f"{getattr(theirs, key)} in the records, {getattr(grid, key)} in the "
                        f"config; consolidate with spectra.{key}={getattr(theirs, key)} (the "
                        "records' own generate= preset), or regenerate them on the new grid."
                    )
            for key in ("fwhm_mev", "weighting"):
                if made[key] != run[key]:
                    raise CacheError(
                        f"{records_dir} record {r.sample_id}: spectra.{key} is {made[key]} in "
                        f"the records, {run[key]} in the config; consolidate with "
                        f"spectra.{key}={made[key]} (the records' own generate= preset)."
                    )
        theirs_hash = r.provenance.settings_hash
        if theirs_hash != run["settings_hash"]:
            raise CacheError(
                f"{records_dir} record {r.sample_id}: made with settings {theirs_hash}, the "
                f"config gives {run['settings_hash']}; consolidate with the config the records "
                "were made with (their generate= preset and overrides), or regenerate them."
            )


def consolidate(records_dir: Path, run: dict) -> tuple[PDoSDataset, dict]:
    """Turn every ``ok`` record into one data set, ordered by sample index.

    ``run`` describes the config (see ``check_made_like``); records made otherwise are refused,
    so the cache's grid is the one its spectra were made on. Returns the data set and a report:
    counts of ok and failed samples, failures by reason.
    """
    records = read_shards(records_dir)
    if not records:
        raise CacheError(f"{records_dir}: no records to consolidate; run the generation first.")
    check_made_like(records, records_dir, run)
    grid = run["grid"]
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r.sample_id, r)
    ok = sorted((r for r in seen.values() if r.status == "ok"), key=lambda r: r.index)
    failed = [r for r in seen.values() if r.status != "ok"]
    # failures of one kind differ only in their numbers: count them as one reason
    reasons = Counter(re.sub(r"\d+(\.\d+)?", "#", r.reason)[:100] for r in failed)
    report = {
        "ok": len(ok),
        "failed": len(failed),
        "failures": dict(reasons),
        "settings_hashes": [run["settings_hash"]],
    }
    if not ok:
        raise CacheError(
            f"{records_dir}: all {len(failed)} samples failed ({dict(reasons)}); nothing to cache."
        )
    parents = sorted({r.provenance.parent_id for r in ok})
    where = lambda r: f"{records_dir} record {r.sample_id}"  # noqa: E731
    stack = lambda key: torch.tensor(  # noqa: E731
        np.array([getattr(r, key) for r in ok], dtype=np.float32)
    )
    for r in ok:
        for key in ("pristine", "doped"):
            if len(getattr(r, key)) != grid.n_points:
                raise CacheError(
                    f"{where(r)}: '{key}' has {len(getattr(r, key))} points, the grid has "
                    f"{grid.n_points}; consolidate records made with one grid."
                )
    ds = PDoSDataset(
        pristine=stack("pristine"),
        doped=stack("doped"),
        composition=stack("composition"),
        mask=torch.tensor(
            np.array(
                [candidate_vector([c["dopant"] for c in r.candidates], where=where(r)) for r in ok]
            )
        ),
        targets=torch.tensor(
            np.array([concentration_vector(r.concentrations, where=where(r)) for r in ok])
        ),
        parent_index=torch.tensor(
            [parents.index(r.provenance.parent_id) for r in ok], dtype=torch.int64
        ),
        parents=parents,
        grid=grid,
        meta={
            "sample_ids": [r.sample_id for r in ok],
            "n_atoms": [r.n_atoms for r in ok],
            "formulas": {r.provenance.parent_id: r.provenance.formula for r in ok},
            "calculator": ok[0].provenance.calculator,
            "settings_hashes": report["settings_hashes"],
            "spectra": {"fwhm_mev": run["fwhm_mev"], "weighting": run["weighting"]},
        },
    )
    return ds, report
