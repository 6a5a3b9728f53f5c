"""The pretraining preset: it composes, and one shard of it runs end to end on a tiny slice
(one parent, a small cell, small patches) with every setting the preset itself makes."""

from pathlib import Path

import pytest

from defectnet.cli import run_generation
from defectnet.data.cache import load_cache
from defectnet.datagen.records import read_shards


@pytest.mark.slow
def test_a_pretrain_shard_runs_on_a_tiny_slice(generate_cfg):
    tiny = [
        "generate=pretrain",
        "num_parents=1",
        "include=[diamond-Si]",
        "num_shards=1",
        "samples_per_parent=6",
        "supercell.min_atoms=16",
        "supercell.max_atoms=16",
        "phonons.patch_atoms=[16,16]",
        "phonons.cutoff=3.0",
        "sampling.undoped_fraction=0.5",
    ]
    cfg = generate_cfg(*tiny, "stage=shard")
    assert cfg.phonons.samples_at_gamma and cfg.balance_prototypes and cfg.shard_by == "parent"
    out = run_generation(cfg)
    assert out["generate"]["planned"] == 6 and out["references"]["parents"] == 1
    out_dir = Path(cfg.out_dir)
    assert [p.name for p in (out_dir / "records").iterdir()] == ["shard-0000-of-0001.jsonl.gz"]
    records = read_shards(out_dir / "records")
    assert all(r.structure.keys() == {"supercell_matrix", "sites"} for r in records if r.structure)
    assert any(r.status == "ok" and not r.counts for r in records)  # undoped samples
    run_generation(generate_cfg(*tiny, "stage=consolidate"))
    assert len(load_cache(cfg.cache)) == sum(r.status == "ok" for r in records)
