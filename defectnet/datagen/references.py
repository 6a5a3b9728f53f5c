"""Stage ``references``: single-dopant spectra of every candidate of each parent, which the
NNLS baseline unmixes difference spectra with (``references/<id>.json``, resumable)."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms
from omegaconf import DictConfig
from tqdm import tqdm

from defectnet.atomic import write_json_atomic
from defectnet.datagen.hosts import prepare_parent
from defectnet.datagen.records import read_json
from defectnet.datagen.settings import settings_hash
from defectnet.datagen.shards import check_output_dir, check_shard, make_context, shard_parents
from defectnet.errors import UserError


def single_dopant_cell(supercell: Atoms, dopant: str, replaces: str) -> Atoms:
    """The supercell with its first ``replaces`` site taken by ``dopant``."""
    symbols = supercell.get_chemical_symbols()
    site = symbols.index(replaces)
    cell = supercell.copy()
    symbols[site] = dopant
    cell.set_chemical_symbols(symbols)
    return cell


def make_references(cfg: DictConfig) -> dict:
    """Single-dopant spectra: for every ok parent of this shard and every candidate of its host,
    one site of the doped supercell substituted, relaxed and simulated like a sample.

    Stored per parent in ``references/<id>.json`` (rewritten atomically after each dopant, so a
    rerun resumes); the NNLS baseline unmixes difference spectra with them.
    """
    shard, num_shards = check_shard(cfg)
    out_dir = Path(cfg.out_dir)
    check_output_dir(out_dir)
    h = settings_hash(cfg)
    mine = shard_parents(cfg, shard, num_shards)
    ctx = make_context(cfg, out_dir, h)
    stats = {"parents": 0, "dopants": 0, "failed": 0}
    for parent in tqdm(mine, desc="references", disable=not cfg.get("progress", True)):
        state = prepare_parent(ctx, parent)
        if state["status"] != "ok":
            continue
        path = out_dir / "references" / f"{parent.id}.json"
        ref = read_json(path) if path.exists() else None
        if ref is not None and ref["settings_hash"] != h:
            raise UserError(
                f"{path}: made with settings {ref['settings_hash']}, the current config gives {h}; "
                "restore that config, or delete the references folder to recompute it."
            )
        host, candidates, supercell, _ = ctx.host_setup(parent, state)
        reference = ctx.host_reference(parent, host, candidates, supercell)
        ref = ref or {
            "parent_id": parent.id,
            "settings_hash": h,
            "pristine": ctx.pristine_spectrum(parent, state, supercell, reference),
            "dopants": {},
            "failed": {},
        }
        for cand in candidates:
            if cand.dopant in ref["dopants"] or cand.dopant in ref["failed"]:
                continue
            try:
                cell = single_dopant_cell(supercell, cand.dopant, cand.replaces)
                structure, _ = ctx.relaxed_doped(cell, reference)
                modes = ctx.phonons.doped_modes(structure, reference, ctx.forcefield)
                ref["dopants"][cand.dopant] = {
                    "replaces": cand.replaces,
                    "concentration": 1 / len(cell),
                    "spectrum": ctx.spectrum(modes).tolist(),
                }
                stats["dopants"] += 1
            except Exception as exc:  # recorded with its reason, then the run goes on
                ref["failed"][cand.dopant] = f"{type(exc).__name__}: {exc}"
                stats["failed"] += 1
            write_json_atomic(path, ref)
        stats["parents"] += 1
    return stats
