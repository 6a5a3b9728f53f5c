import json

import pytest
import torch
from safetensors.torch import save_file

from defectnet.data.cache import CacheError, PDoSDataset, load_cache, save_cache
from defectnet.spectra import EnergyGrid


def _dataset(n=8):
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 56)
    mask[:, [13, 31]] = 1
    targets = torch.zeros(n, 56)
    targets[:, 31] = torch.rand(n, generator=g) * 0.2
    return PDoSDataset(
        pristine=torch.rand(n, 100, generator=g),
        doped=torch.rand(n, 100, generator=g),
        composition=torch.rand(n, 100, generator=g),
        mask=mask,
        targets=targets,
        parent_index=torch.arange(n) % 2,
        parents=["p0", "p1"],
        grid=EnergyGrid(),
        meta={"note": "test"},
    )


def test_round_trip(tmp_path):
    path = tmp_path / "ds.safetensors"
    save_cache(_dataset(), path)
    ds = load_cache(path)
    assert len(ds) == 8 and ds.parents == ["p0", "p1"] and ds.grid == EnergyGrid()
    assert ds.inputs().shape == (8, 3, 100) and ds.meta == {"note": "test"}
    assert ds.parent_ids[:2] == ["p0", "p1"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_shared_hosts_are_stored_once_and_read_back_exactly(tmp_path):
    from safetensors.torch import load_file

    ds = _dataset()
    ds.pristine[2:] = ds.pristine[0]  # rows 0 and 2–7 share a host cell, row 1 has its own
    ds.composition[2:] = ds.composition[0]
    path = tmp_path / "ds.safetensors"
    save_cache(ds, path)
    stored = load_file(str(path))
    assert stored["pristine"].shape == (2, 100) and stored["concentrations"].shape == (16,)
    back = load_cache(path)
    for k in ("pristine", "doped", "composition", "mask", "targets", "parent_index"):
        assert torch.equal(getattr(back, k), getattr(ds, k)), k


def test_a_target_outside_the_candidates_is_refused(tmp_path):
    ds = _dataset()
    ds.targets[0, 0] = 0.01  # element 0 is not a candidate
    with pytest.raises(CacheError, match="outside its candidates"):
        save_cache(ds, tmp_path / "ds.safetensors")
    assert not list(tmp_path.iterdir())


def test_select_keeps_rows_parents_and_sample_ids():
    ds = _dataset()
    ds.meta["sample_ids"] = [f"p{i % 2}/{i}" for i in range(8)]
    part = ds.select([5, 3, 1])  # rows of parent p1 only, in the order asked
    assert part.parents == ["p1"] and part.parent_index.tolist() == [0, 0, 0]
    assert part.meta == {"note": "test", "sample_ids": ["p1/5", "p1/3", "p1/1"]}
    assert torch.equal(part.doped, ds.doped[[5, 3, 1]])
    assert torch.equal(part.targets, ds.targets[[5, 3, 1]])


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "ds.safetensors"
    save_cache(_dataset(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CacheError, match="corrupt or truncated"):
        load_cache(path)
    with pytest.raises(CacheError, match="no such data set file"):
        load_cache(tmp_path / "missing.safetensors")


def test_version_mismatch(tmp_path):
    ds = _dataset()
    path = tmp_path / "old.safetensors"
    save_file(
        {
            k: getattr(ds, k)
            for k in ("pristine", "doped", "composition", "mask", "targets", "parent_index")
        },
        str(path),
        metadata={"format_version": "0", "parents": json.dumps(ds.parents)},
    )
    with pytest.raises(CacheError, match="format version '0'"):
        load_cache(path)
