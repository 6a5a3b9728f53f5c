"""Stage ``references``: single-dopant spectra of every candidate of each parent, which the
NNLS baseline unmixes difference spectra with and the reference-informed network reads
(``references/<id>.json``, resumable).

Per candidate one substituted site (the dilute, linear response) and, per denser level with
``reference_cells.<level>_fraction`` > 0 (``high``, ``dense``), that fraction of all atoms
substituted. A dopant's difference spectrum stops growing linearly with its concentration: on the
116-parent pretraining set a lone dopant at 5–12 % gives a least-squares share of 0.73 of its
true concentration against its dilute reference (0.64 at 12–25 %, 1.00 below 1 %), and a
host-specific shape change. The denser cells tell a model what the dilute one cannot. They are
made with the host's phonon method; under the superposed method that sums each dopant's own
patch, so the dopants' interactions with one another are missing, and the cell keeps the host's
lattice. The ``alloy`` level (``reference_cells.alloy_fraction``) holds both: a small cell
(``alloy_atoms``) with that fraction substituted, relaxed with its cell (``alloy_relax``), every
displacement computed (``alloy_phonons``). A rerun with a level
newly asked for adds it to the references already made."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from defectnet.atomic import write_json_atomic
from defectnet.datagen.context import Context
from defectnet.datagen.force_pool import force_workers
from defectnet.datagen.hosts import prepare_parent
from defectnet.datagen.phonons import Modes
from defectnet.datagen.records import read_json
from defectnet.datagen.samples import UnstableSample, check_stability
from defectnet.datagen.settings import accepted_hashes
from defectnet.datagen.shards import check_output_dir, check_shard, make_context, shard_parents
from defectnet.datagen.supercell import choose_supercell
from defectnet.errors import UserError

log = logging.getLogger(__name__)


def single_dopant_cell(supercell: Atoms, dopant: str, replaces: str) -> Atoms:
    """The supercell with its first ``replaces`` site taken by ``dopant``."""
    symbols = supercell.get_chemical_symbols()
    site = symbols.index(replaces)
    cell = supercell.copy()
    symbols[site] = dopant
    cell.set_chemical_symbols(symbols)
    return cell


def many_dopant_cell(supercell: Atoms, dopant: str, replaces: str, count: int, seed: int) -> Atoms:
    """The supercell with ``count`` ``replaces`` sites, drawn at random, taken by ``dopant``."""
    symbols = supercell.get_chemical_symbols()
    sites = [i for i, s in enumerate(symbols) if s == replaces]
    rng = np.random.default_rng([seed, atomic_numbers[dopant]])
    for i in rng.choice(sites, size=count, replace=False):
        symbols[i] = dopant
    cell = supercell.copy()
    cell.set_chemical_symbols(symbols)
    return cell


def site_count(supercell: Atoms, replaces: str, fraction: float) -> int:
    """Sites substituted in a denser reference cell: ``fraction`` of all atoms, capped at the
    replaced sublattice."""
    return min(round(fraction * len(supercell)), supercell.get_chemical_symbols().count(replaces))


def simulate(ctx: Context, cell: Atoms, count: int, reference) -> tuple[dict, Modes]:
    """A reference cell with ``count`` dopant sites relaxed and simulated like a sample: its
    entry (the dopant's concentration, the spectrum) and its modes."""
    structure, _ = ctx.relaxed_doped(cell, reference)
    modes = ctx.phonons.doped_modes(structure, reference, ctx.forcefield)
    return {"concentration": count / len(cell), "spectrum": ctx.spectrum(modes).tolist()}, modes


def dense_reference(ctx: Context, supercell: Atoms, cand, fraction: float, reference) -> dict:
    """A denser reference cell's entry: ``fraction`` of all atoms substituted, or half as many
    when that many sites leave the summed defect patches unstable (as a sample with too many
    imaginary modes is dropped); the entry keeps the concentration it was made at."""
    count = site_count(supercell, cand.replaces, fraction)
    while True:
        if count < 2:
            raise UnstableSample(f"no stable cell with 2 or more {cand.replaces} sites replaced")
        cell = many_dopant_cell(supercell, cand.dopant, cand.replaces, count, int(ctx.cfg.seed))
        entry, modes = simulate(ctx, cell, count, reference)
        try:
            check_stability(modes, ctx.cfg.sample_stability)
            return entry
        except UnstableSample:
            count //= 2


def alloy_reference(ctx: Context, host: Atoms, cand, settings: DictConfig, small: dict) -> dict:
    """An alloy reference cell's entry: ``settings.alloy_fraction`` of all atoms of a cell of
    ``settings.alloy_atoms`` (a range) substituted, relaxed with ``settings.alloy_relax`` (the
    cell too: so many dopants move the lattice parameter), and its phonons computed with every
    displacement on a q-mesh (``settings.alloy_phonons``), halved like the dense cell while
    unstable. The entry carries the pristine spectrum of the same cell and method, which its
    difference is taken from, and how much the relaxation changed the cell's volume. The small
    cell, its phonon method and its pristine spectrum are made at a host's first candidate and
    kept in ``small`` for the others."""
    if not small:
        phonons = instantiate(settings.alloy_phonons)
        phonons.projections = ctx.phonons.projections
        lo, hi = settings.alloy_atoms
        matrix, cell = choose_supercell(host, lo, hi, where="reference_cells.alloy_atoms")
        pristine = ctx.spectrum(phonons.modes(host, matrix, ctx.forcefield)).tolist()
        small.update(phonons=phonons, cell=cell, pristine=pristine)
    phonons, cell = small["phonons"], small["cell"]
    count = site_count(cell, cand.replaces, float(settings.alloy_fraction))
    while True:
        if count < 2:
            raise UnstableSample(f"no stable cell with 2 or more {cand.replaces} sites replaced")
        doped = many_dopant_cell(cell, cand.dopant, cand.replaces, count, int(ctx.cfg.seed))
        relaxed = ctx.relax(doped, settings.alloy_relax).atoms
        modes = phonons.modes(relaxed, np.eye(3, dtype=int), ctx.forcefield)
        try:
            check_stability(modes, ctx.cfg.sample_stability)
            break
        except UnstableSample:
            count //= 2
    return {
        "concentration": count / len(cell),
        "spectrum": ctx.spectrum(modes).tolist(),
        "pristine": small["pristine"],
        "atoms": len(cell),
        "volume_change": relaxed.get_volume() / cell.get_volume() - 1,
    }


def expected_cost(cfg: DictConfig, n_hosts: int, alloy_cells: int = 0) -> str:
    """What the hosts left to do will cost, from the preset's measured minutes per host, with
    how this run shares its force calls beside how the figure was measured; and the alloy
    cells still to make in hosts whose other references exist (``cost.minutes_per_alloy_cell``:
    each is a small cell computed in full, its own cost, no library)."""
    cost = cfg.get("cost") or {}
    workers = force_workers(cfg.get("force_workers", 1))
    run = f"this run: force_workers={workers} on {len(os.sched_getaffinity(0))} cores"
    parts, total = [], 0.0
    if n_hosts:
        if cost.get("minutes_per_host") is None:
            return "no cost estimate (cost.minutes_per_host)"
        minutes = float(cost.minutes_per_host)
        parts.append(f"≈ {minutes:g} min each (measured: {cost.measured_on}; {run})")
        total += n_hosts * minutes
    if alloy_cells:
        if cost.get("minutes_per_alloy_cell") is None:
            return "no cost estimate (cost.minutes_per_alloy_cell)"
        minutes = float(cost.minutes_per_alloy_cell)
        parts.append(
            f"{alloy_cells} alloy cells of hosts with references, ≈ {minutes:g} min each "
            f"(measured: {cost.alloy_measured_on}; {run})"
        )
        total += alloy_cells * minutes
    if not parts:
        return "nothing to do"
    return "; ".join(parts) + f": ≈ {total:.0f} min"


def cells_missing(ref: dict, level: str) -> int:
    """The cells at ``level`` a host's references still lack (a candidate given up on there is
    not counted)."""
    failed = ref.get(f"failed_{level}", {})
    return sum(level not in entry and d not in failed for d, entry in ref["dopants"].items())


def complete(path: Path, levels) -> bool:
    """Whether a host's references hold (or have given up on) every cell of ``levels``."""
    if not path.exists():
        return False
    ref = read_json(path)
    return not any(cells_missing(ref, level) for level in levels)


def work_left(paths: list[Path], levels) -> tuple[int, int]:
    """The hosts of ``paths`` (their references, incomplete) still to make, and the alloy cells
    of those that lack nothing else: such a host costs its alloy cells, not a library."""
    hosts, alloy_cells = 0, 0
    for path in paths:
        ref = read_json(path) if "alloy" in levels and path.exists() else None
        if ref is not None and not any(cells_missing(ref, lv) for lv in levels if lv != "alloy"):
            alloy_cells += cells_missing(ref, "alloy")
        else:
            hosts += 1
    return hosts, alloy_cells


def make_references(cfg: DictConfig) -> dict:
    """Single-dopant spectra: for every ok parent of this shard and every candidate of its host,
    one site of the doped supercell substituted (and, under ``"high"`` and ``"dense"``, the
    denser cells asked for), relaxed and simulated like a sample.

    Stored per parent in ``references/<id>.json`` (rewritten atomically after each cell, so a
    rerun resumes, and fills in the denser cells of references made before them).
    """
    shard, num_shards = check_shard(cfg)
    out_dir = Path(cfg.out_dir)
    check_output_dir(out_dir)
    h, *legacy = accepted_hashes(cfg)
    mine = shard_parents(cfg, shard, num_shards)
    ctx = make_context(cfg, out_dir, h)
    # each denser level by its config key, reference_cells.<level>_fraction (0: not made)
    fractions = {
        key.removesuffix("_fraction"): float(value or 0)
        for key, value in cfg.reference_cells.items()
        if key.endswith("_fraction")
    }
    fractions = {level: f for level, f in fractions.items() if f > 0}
    stats = {"parents": 0, "dopants": 0, "failed": 0}
    stats |= {k: 0 for level in fractions for k in (level, f"failed_{level}")}
    paths = [out_dir / "references" / f"{p.id}.json" for p in mine]
    todo = [path for path in paths if not complete(path, fractions)]
    log.info(
        "references: %d hosts in this shard, %d not complete; %s",
        len(mine),
        len(todo),
        expected_cost(cfg, *work_left(todo, fractions)),
    )
    for parent in tqdm(mine, desc="references", disable=not cfg.get("progress", True)):
        state = prepare_parent(ctx, parent)
        if state["status"] != "ok":
            continue
        path = out_dir / "references" / f"{parent.id}.json"
        ref = read_json(path) if path.exists() else None
        if ref is not None and ref["settings_hash"] not in (h, *legacy):
            raise UserError(
                f"{path}: made with settings {ref['settings_hash']}, the current config gives {h}; "
                "restore that config, or delete the references folder to recompute it."
            )
        host, candidates, supercell, _ = ctx.host_setup(parent, state)
        # the host's library (kept by ctx once built), built only when a cell here needs it
        reference = functools.partial(ctx.host_reference, parent, host, candidates, supercell)
        ref = ref or {
            "parent_id": parent.id,
            "formula": parent.formula,
            "settings_hash": h,
            "pristine": ctx.pristine_spectrum(parent, state, supercell, reference()),
            "dopants": {},
            "failed": {},
        }
        alloy_cell = {}  # the host's small alloy cell, made at its first alloy candidate
        for cand in candidates:
            d = cand.dopant
            if d not in ref["dopants"] and d not in ref["failed"]:
                try:
                    cell = single_dopant_cell(supercell, d, cand.replaces)
                    entry, _ = simulate(ctx, cell, 1, reference())
                    ref["dopants"][d] = {"replaces": cand.replaces} | entry
                    stats["dopants"] += 1
                except Exception as exc:  # recorded with its reason, then the run goes on
                    ref["failed"][d] = f"{type(exc).__name__}: {exc}"
                    stats["failed"] += 1
                write_json_atomic(path, ref)
            for level, fraction in fractions.items():
                failed = ref.setdefault(f"failed_{level}", {})
                if d not in ref["dopants"] or level in ref["dopants"][d] or d in failed:
                    continue
                try:
                    if level == "alloy":
                        settings = cfg.reference_cells
                        entry = alloy_reference(ctx, host, cand, settings, alloy_cell)
                    else:
                        entry = dense_reference(ctx, supercell, cand, fraction, reference())
                    ref["dopants"][d][level] = entry
                    stats[level] += 1
                except Exception as exc:  # recorded with its reason, then the run goes on
                    failed[d] = f"{type(exc).__name__}: {exc}"
                    stats[f"failed_{level}"] += 1
                write_json_atomic(path, ref)
        stats["parents"] += 1
    return stats
