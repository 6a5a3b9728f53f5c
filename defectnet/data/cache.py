"""One tensor file per data set: what training reads instead of thousands of records.

Stored with safetensors (no pickle), compactly, for the file is committed: each distinct host
cell's ``pristine`` spectrum and ``composition`` once ([H, 100] float32) with ``host_index`` [N]
pointing into them (a parent's hundred samples share one pristine cell); ``doped`` [N, 100]
float32; ``mask`` [N, 56] bool; ``concentrations`` float32, the targets at the candidates only (a
target outside the candidates is zero by construction); ``parent_index`` [N] into the parent list
kept in the metadata, which also holds the energy grid, provenance and the format version. In
memory (``PDoSDataset``) every tensor is per sample again.
"""

from __future__ import annotations

import json
import logging
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

FORMAT_VERSION = "2"
# the tensors a cache file holds (see the module docstring)
STORED = (
    "pristine",
    "composition",
    "host_index",
    "doped",
    "mask",
    "concentrations",
    "parent_index",
)


# metadata lists with one entry per sample (the rest describes the whole data set)
PER_SAMPLE_META = ("sample_ids", "n_atoms")


log = logging.getLogger(__name__)


def network_input(pristine, doped, composition) -> torch.Tensor:
    """[B, 3, L]: what every network reads, its three channels (pristine PDoS, doped PDoS, host
    composition over Z = 1…L); one sample's [L] arrays give a batch of one."""
    channels = [
        torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in (pristine, doped, composition)
    ]
    x = torch.stack(channels, dim=-2)
    return x if x.dim() == 3 else x[None]


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
        """[N, 3, 100]: the network's input (``network_input``)."""
        return network_input(self.pristine, self.doped, self.composition)

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
    mask = ds.mask > 0
    if (ds.targets[~mask] != 0).any():
        raise CacheError(f"{path}: a sample has a non-zero target outside its candidates.")
    hosts, host_index = torch.unique(
        torch.cat([ds.pristine, ds.composition], dim=1), dim=0, return_inverse=True
    )
    width = ds.pristine.shape[1]
    tensors = {
        "pristine": hosts[:, :width],
        "composition": hosts[:, width:],
        "host_index": host_index,
        "doped": ds.doped,
        "mask": mask,
        "concentrations": ds.targets[mask],
        "parent_index": ds.parent_index,
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "parents": json.dumps(ds.parents),
        "grid": json.dumps(ds.grid.as_dict()),
        "dopants": json.dumps(list(DOPANTS)),
        "info": json.dumps(ds.meta),
    }
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


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
    missing = {*STORED} - set(tensors)
    if missing:
        raise CacheError(f"{path}: tensors {sorted(missing)} are missing; rebuild the cache.")
    n = tensors["doped"].shape[0]
    grid = EnergyGrid(**{k: v for k, v in json.loads(meta["grid"]).items() if k != "unit"})
    n_hosts = tensors["pristine"].shape[0]
    expected = {
        "pristine": (n_hosts, grid.n_points),
        "composition": (n_hosts, N_COMPOSITION),
        "host_index": (n,),
        "doped": (n, grid.n_points),
        "mask": (n, N_DOPANTS),
        "concentrations": (int(tensors["mask"].sum()),),
        "parent_index": (n,),
    }
    for k, shape in expected.items():
        if tuple(tensors[k].shape) != shape:
            raise CacheError(
                f"{path}: tensor '{k}' has shape {tuple(tensors[k].shape)}, expected {shape}; "
                "the file is damaged: rebuild it with defectnet-generate stage=consolidate."
            )
    host, mask = tensors["host_index"], tensors["mask"]
    targets = torch.zeros(mask.shape, dtype=torch.float32)
    targets[mask] = tensors["concentrations"]
    return PDoSDataset(
        pristine=tensors["pristine"][host],
        doped=tensors["doped"],
        composition=tensors["composition"][host],
        mask=mask.to(torch.float32),
        targets=targets,
        parent_index=tensors["parent_index"],
        parents=json.loads(meta["parents"]),
        grid=grid,
        meta=json.loads(meta.get("info", "{}")),
    )


def check_made_like(records: list[Record], records_dir: Path, run: dict) -> None:
    """Refuse records whose spectra or settings differ from the run's config.

    ``run`` holds the config's ``settings_hash`` (and the ``accepted_hashes`` of records it may
    read: its own and the legacy one, ``datagen.settings``), ``grid``, ``fwhm_mev`` and
    ``weighting``.
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
        if theirs_hash not in run.get("accepted_hashes", (run["settings_hash"],)):
            raise CacheError(
                f"{records_dir} record {r.sample_id}: made with settings {theirs_hash}, the "
                f"config gives {run['settings_hash']}; consolidate with the config the records "
                "were made with (their generate= preset and overrides), or regenerate them."
            )


def imaginary_fraction(record: Record) -> float:
    """The share of a sample's modes that are imaginary (0 for records made before it was
    recorded)."""
    return float((record.phonons or {}).get("imaginary_fraction", 0.0))


def consolidate(records_dir: Path, run: dict) -> tuple[PDoSDataset, dict]:
    """Turn every ``ok`` record into one data set, ordered by sample index.

    ``run`` describes the config (see ``check_made_like``); records made otherwise are refused,
    so the cache's grid is the one its spectra were made on. Samples with more imaginary modes
    than ``run["max_imaginary_fraction"]`` (when set) stay out, and so do the parents outside
    ``run["parents"]`` (when set). Returns the data set and a
    report: counts of ok and failed samples, failures by reason, samples left out as unstable,
    and the torn tails of shards still being written (or cut off by a stop), which are skipped
    and named.
    """
    skipped: list[str] = []
    records = read_shards(records_dir, skipped)
    for line in skipped:
        log.warning("%s: skipped", line)
    if not records:
        raise CacheError(f"{records_dir}: no records to consolidate; run the generation first.")
    check_made_like(records, records_dir, run)
    grid = run["grid"]
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r.sample_id, r)
    wanted = None if run.get("parents") is None else set(run["parents"])
    ok = sorted(
        (
            r
            for r in seen.values()
            if r.status == "ok" and (wanted is None or r.provenance.parent_id in wanted)
        ),
        key=lambda r: r.index,
    )
    failed = [r for r in seen.values() if r.status != "ok"]
    # failures of one kind differ only in their numbers: count them as one reason
    reasons = Counter(re.sub(r"\d+(\.\d+)?", "#", r.reason)[:100] for r in failed)
    limit = run.get("max_imaginary_fraction")
    stable = [r for r in ok if limit is None or imaginary_fraction(r) <= limit]
    unstable, ok = len(ok) - len(stable), stable
    report = {
        "ok": len(ok),
        "failed": len(failed),
        "failures": dict(reasons),
        "left_out_unstable": unstable,
        "settings_hashes": sorted({r.provenance.settings_hash for r in ok}),
        "skipped_lines": skipped,
    }
    if not ok:
        raise CacheError(
            f"{records_dir}: no sample to cache: {len(failed)} failed ({dict(reasons)}), "
            f"{unstable} have more imaginary modes than cache_stability.max_imaginary_fraction="
            f"{limit} (raise it to take them)."
        )
    parents = sorted({r.provenance.parent_id for r in ok})
    missing = sorted(wanted - set(parents)) if wanted is not None else []
    if missing:  # a set still being made; a shipped one's cards name its parents
        log.warning(
            "%s: cache_parents names %d parents without an ok sample in the records (%s%s); "
            "the cache holds the other %d",
            records_dir,
            len(missing),
            ", ".join(missing[:5]),
            " …" if len(missing) > 5 else "",
            len(parents),
        )
    report["parents_without_samples"] = len(missing)
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
            "phonons": ok[0].provenance.phonons,
            "settings_hashes": report["settings_hashes"],
            "spectra": {"fwhm_mev": run["fwhm_mev"], "weighting": run["weighting"]},
        },
    )
    return ds, report
