"""Outputs are written whole or not at all."""

import json

import pytest

from defectnet.atomic import atomic_path, write_json_atomic, write_text_atomic


def test_written_files_replace_the_old_one_whole(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_json_atomic(path, {"rmse": 0.1}, indent=2)
    write_json_atomic(path, {"rmse": 0.2})
    assert json.loads(path.read_text()) == {"rmse": 0.2}
    write_text_atomic(tmp_path / "table.md", "| a |\n")
    assert (tmp_path / "table.md").read_text() == "| a |\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["metrics.json", "sub", "table.md"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "figure.png"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers infer the format
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
