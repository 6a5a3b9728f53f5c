"""Stage ``parents``: relax each parent, check it is stable, compute its pristine spectrum;
stored once per parent (``parents/<id>.json``) and shared by every shard."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from defectnet.atomic import write_json_atomic
from defectnet.datagen.context import Context, atoms_to_dict
from defectnet.datagen.parents.base import Parent
from defectnet.datagen.records import read_json
from defectnet.datagen.settings import settings_hash
from defectnet.datagen.shards import check_output_dir, check_shard, make_context, shard_parents
from defectnet.datagen.simulate import Simulator


def prepare_parent(ctx: Context, parent: Parent) -> dict:
    """Relax the parent (cell + positions), check it is stable, compute its pristine spectrum.

    Stored as ``parents/<id>.json``; a stored result is reused, never recomputed.
    """
    path = ctx.out_dir / "parents" / f"{parent.id}.json"
    if path.exists():
        return read_json(path)
    pc = ctx.cfg.parent_relax
    t0 = time.perf_counter()
    result = {
        "id": parent.id,
        "formula": parent.formula,
        "prototype": parent.prototype,
        "settings_hash": ctx.settings_hash,
    }
    try:
        ps = ctx.cfg.pristine_supercell
        sim = Simulator(ctx.forcefield, ctx.phonons, pc, (ps.min_atoms, ps.max_atoms))
        relaxed = sim.relax(parent.atoms)
        result["relax"] = relaxed.summary()
        result["structure"] = atoms_to_dict(relaxed.atoms)
        if abs(relaxed.volume_change) > pc.max_volume_change:
            raise UnstableParent(
                f"volume changed by {relaxed.volume_change:+.1%} on relaxation "
                f"(limit ±{pc.max_volume_change:.0%})"
            )
        matrix, modes = sim.modes(relaxed.atoms, where=parent.id)
        frac = modes.imaginary_fraction(pc.imaginary_tolerance_mev)
        result["phonons"] = {
            "n_displacements": modes.n_displacements,
            "min_energy_mev": modes.min_energy,
            "imaginary_fraction": frac,
            "supercell_matrix": matrix.tolist(),
        }
        if frac > pc.max_imaginary_fraction:
            raise UnstableParent(
                f"{frac:.1%} of modes imaginary beyond "
                f"{pc.imaginary_tolerance_mev} meV (down to "
                f"{modes.min_energy:.2f} meV; limit {pc.max_imaginary_fraction:.1%})"
            )
        result["pristine"] = ctx.spectrum(modes).tolist()
        result["status"] = "ok"
    except UnstableParent as exc:
        result.update(status="discarded", reason=str(exc))
    except Exception as exc:  # recorded, never silently dropped
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    result["seconds"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(path, result)
    return result


class UnstableParent(RuntimeError):
    """A parent that relaxes too far or has imaginary modes: discarded, with the reason."""


def prepare_parents(cfg: DictConfig) -> dict:
    """Prepare this shard's share of the parents (parent ``j`` goes to shard ``j % n``).

    Samples of one parent are spread over every shard, so when parent work is costly (a
    melt-quench, a large pristine cell) running this stage first keeps two shards from
    preparing the same parent at once.
    """
    shard, num_shards = check_shard(cfg)
    out_dir = Path(cfg.out_dir)
    check_output_dir(out_dir)
    mine = shard_parents(cfg, shard, num_shards)
    ctx = make_context(cfg, out_dir, settings_hash(cfg))
    stats: dict = {}
    bar = tqdm(mine, desc=f"parents {shard}/{num_shards}", disable=not cfg.get("progress", True))
    for parent in bar:
        status = prepare_parent(ctx, parent)["status"]
        stats[status] = stats.get(status, 0) + 1
    return stats
