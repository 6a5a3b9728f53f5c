"""Stage ``generate``: this shard's doped samples, each a record appended to its shard file;
a rerun skips what any shard file already holds."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase import Atoms
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from defectnet.datagen.context import Context, atoms_from_dict, compact
from defectnet.datagen.defect_library import library_seconds
from defectnet.datagen.hosts import prepare_parent
from defectnet.datagen.parents.base import Parent
from defectnet.datagen.records import Record, RecordShard, read_shards
from defectnet.datagen.settings import accepted_hashes, grid_from_config
from defectnet.datagen.shards import (
    check_output_dir,
    check_shard,
    make_context,
    plan,
    selected_parents,
    shard_of,
    shard_path,
)
from defectnet.datagen.supercell import substitute
from defectnet.elements import N_COMPOSITION, composition_vector, dopant_index
from defectnet.errors import UserError
from defectnet.spectra import weight_outside

log = logging.getLogger(__name__)


class UnstableSample(RuntimeError):
    """A sample with more imaginary modes than ``sample_stability`` allows: recorded as failed."""


def check_stability(modes, settings: DictConfig) -> float:
    """The fraction of imaginary modes; raises ``UnstableSample`` above the configured limit."""
    tolerance = float(settings.imaginary_tolerance_mev)
    fraction = modes.imaginary_fraction(tolerance)
    limit = settings.get("max_imaginary_fraction")
    if limit is not None and fraction > limit:
        raise UnstableSample(
            f"{fraction:.1%} of modes imaginary beyond -{tolerance:g} meV (down to "
            f"{modes.min_energy:.1f} meV; sample_stability.max_imaginary_fraction {limit:.1%})"
        )
    return fraction


def make_sample(ctx: Context, parent: Parent, parent_state: dict, index: int) -> dict:
    """One doped supercell → a record with both spectra, candidates and concentrations."""
    cfg = ctx.cfg
    timing = {}
    t0 = time.perf_counter()
    host, candidates, supercell, matrix = ctx.host_setup(parent, parent_state)
    rng = np.random.default_rng([int(cfg.seed), index])
    sub = substitute(supercell, candidates, rng, **OmegaConf.to_container(cfg.sampling))
    timing["setup_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    reference = ctx.host_reference(parent, host, candidates, supercell)
    timing["host_phonons_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    structure, relax_summary = ctx.relaxed_doped(sub.atoms, reference)
    timing["relax_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    modes = ctx.phonons.doped_modes(structure, reference, ctx.forcefield)
    timing["phonons_s"] = time.perf_counter() - t3
    imaginary = check_stability(modes, cfg.sample_stability)
    timing["total_s"] = time.perf_counter() - t0
    return {
        "n_atoms": len(sub.atoms),
        "doped_formula": structure.get_chemical_formula(),
        "counts": sub.counts,
        "concentrations": sub.concentrations,
        "candidates": [c.as_dict() for c in sub.candidates],
        "distractors": sub.distractors,
        "pristine": compact(ctx.pristine_spectrum(parent, parent_state, supercell, reference)),
        "doped": compact(ctx.spectrum(modes)),
        "spectra": ctx.spectra_settings(),
        "structure": ctx.structure_record(structure, matrix, sub.sites),
        "composition": compact(composition_vector(host.get_chemical_symbols())),
        "relax": relax_summary,
        "phonons": {
            "n_displacements": modes.n_displacements,
            "host_displacements": getattr(reference, "n_displacements", 0),
            "library_calls": getattr(reference, "library_calls", 0),
            "min_energy_mev": modes.min_energy,
            "imaginary_fraction": imaginary,
            "weight_above_grid": weight_outside(modes.energies_mev, ctx.grid, modes.weights),
        },
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }


def sample_structure(record: Record, parent_state: dict) -> Atoms:
    """A record's doped cell: its stored positions, or the parent's relaxed cell repeated by the
    record's supercell matrix with the record's sites substituted (unrelaxed: the defect
    library's relaxation is not stored per sample)."""
    from ase.build import make_supercell

    structure = record.structure
    if "positions" in structure:
        return atoms_from_dict(structure)
    host = atoms_from_dict(parent_state["structure"])
    cell = make_supercell(host, structure["supercell_matrix"], order="cell-major")
    symbols = cell.get_chemical_symbols()
    for dopant, sites in structure["sites"].items():
        for i in sites:
            symbols[i] = dopant
    cell.set_chemical_symbols(symbols)
    return cell


def expected_cost(
    cfg: DictConfig, existing: list[Record], n_todo: int, libraries: int = 0, out_dir=None
) -> str:
    """What the samples left to do will cost, printed before starting: each sample from the
    mean time of the samples this data set already holds (else the config's measured
    estimate), plus, for ``libraries`` hosts not started (superposed phonons: a defect library
    each), the median build time of the libraries stored in ``out_dir`` (else the config's
    ``cost.minutes_per_library``; neither: no such cost, as for `full` phonons)."""
    times = [
        (r.timing["total_s"] - r.timing.get("host_phonons_s", 0.0)) / 60
        for r in existing
        if r.status == "ok"
    ]
    cost = cfg.get("cost") or {}
    if times:
        minutes, source = float(np.mean(times)), f"mean of {len(times)} samples done here"
    elif cost.get("minutes_per_sample"):
        minutes, source = float(cost.minutes_per_sample), cost.measured_on
    else:
        return (
            f"{n_todo} samples to do (no cost estimate: none done yet, no cost.minutes_per_sample)"
        )
    total = n_todo * minutes
    each = f"{minutes:.1f} min" if minutes >= 1 else f"{60 * minutes:.0f} s"
    text = f"{n_todo} samples to do, ≈ {each} each ({source})"
    stored = sorted((Path(out_dir) / "library").glob("*.safetensors")) if out_dir else []
    if libraries and (stored or cost.get("minutes_per_library")):
        if stored:
            built = [library_seconds(path) / 60 for path in stored]
            each, where = float(np.median(built)), f"median of {len(built)} stored here"
        else:
            each, where = float(cost.minutes_per_library), cost.measured_on
        total += libraries * each
        text += f", and {libraries} host libraries to build, ≈ {each:.0f} min each ({where})"
    return f"{text}: ≈ {total / 60:,.1f} h for this process"


def run_shard(cfg: DictConfig) -> dict:
    """Generate this shard's samples; returns counts of what was done, skipped and failed."""
    shard, num_shards = check_shard(cfg)
    if grid_from_config(cfg).n_points != N_COMPOSITION:  # a bad grid is refused before any work
        raise UserError(
            f"spectra.n_points={cfg.spectra.n_points}: DefectNet reads three channels of "
            f"{N_COMPOSITION} points (pristine, doped, composition over Z = 1…{N_COMPOSITION}); "
            f"set spectra.n_points={N_COMPOSITION}."
        )
    if cfg.candidates is not None:
        for dopant in cfg.candidates:
            dopant_index(dopant, where="candidates")
    out_dir = Path(cfg.out_dir)
    check_output_dir(out_dir)
    h, *legacy = accepted_hashes(cfg)
    records = RecordShard(shard_path(out_dir, shard, num_shards))
    existing = read_shards(out_dir / "records")  # every shard file: resharding skips them too
    other = {r.provenance.settings_hash for r in existing} - {h, *legacy}
    if other:
        raise UserError(
            f"{out_dir / 'records'}: records were made with settings {sorted(other)}, the "
            f"current config gives {h}; restore that config to resume, or choose a new out_dir."
        )
    done = {r.sample_id for r in existing}
    mine = [(i, p) for i, p in plan(cfg, selected_parents(cfg)) if shard_of(cfg, i) == shard]
    todo = [(i, p) for i, p in mine if f"{p.id}/{i}" not in done]
    stats = {"planned": len(mine), "skipped": len(mine) - len(todo), "ok": 0, "failed": 0}
    if not todo:
        log.info("shard %d/%d: all %d samples already done", shard, num_shards, len(mine))
        if records.path.exists():
            records.compress()
        return stats
    started = {r.provenance.parent_id for r in existing}
    new_hosts = len({p.id for _, p in todo} - started)
    log.info(
        "shard %d/%d: %s",
        shard,
        num_shards,
        expected_cost(cfg, existing, len(todo), new_hosts, out_dir),
    )
    ctx = make_context(cfg, out_dir, h)
    bar = tqdm(
        todo,
        desc=f"shard {shard}/{num_shards}",
        unit="sample",
        disable=not cfg.get("progress", True),
    )
    for index, parent in bar:
        record = Record(
            sample_id=f"{parent.id}/{index}",
            index=index,
            provenance=ctx.provenance(parent, [int(cfg.seed), index]),
        )
        try:
            state = prepare_parent(ctx, parent)
            if state["status"] != "ok":
                raise RuntimeError(f"parent {state['status']}: {state['reason']}")
            record = record.with_sample(make_sample(ctx, parent, state, index))
            stats["ok"] += 1
        except UserError:  # a mistake in the config or its files: stop, record nothing
            raise
        except Exception as exc:  # recorded with its reason, then the run goes on
            record = replace(record, status="failed", reason=f"{type(exc).__name__}: {exc}")
            log.debug("sample %s failed:\n%s", record.sample_id, traceback.format_exc())
            stats["failed"] += 1
        records.append(record)
        bar.set_postfix(ok=stats["ok"], failed=stats["failed"])
    records.compress()  # finished: every planned sample of this shard has its record
    return stats
