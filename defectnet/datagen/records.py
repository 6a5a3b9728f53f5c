"""Append-only JSON-lines record shards and atomic JSON files.

A record is appended with a single write and flushed to disk, so a killed run leaves at most one
torn last line; opening the shard again cuts that line off and everything before it counts as
done. Other outputs go through ``defectnet.atomic``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from defectnet.errors import UserError


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: not valid JSON ({exc}); delete the file to recompute it."
        ) from exc


class RecordShard:
    """One shard's records: ``records`` holds what is on disk, ``append`` adds one more."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        if self.path.exists():
            self._load_and_repair()

    def _load_and_repair(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn final write from a killed run
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_end += len(line)
        if good_end != len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)

    @property
    def done(self) -> set[str]:
        return {r["sample_id"] for r in self.records}

    def append(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(record)


def read_shards(records_dir: Path) -> list[dict]:
    """Every record of every shard in a folder (torn tails ignored, files left untouched)."""
    out = []
    for path in sorted(Path(records_dir).glob("shard-*.jsonl")):
        for n, line in enumerate(path.read_bytes().splitlines(keepends=True), 1):
            if not line.endswith(b"\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}, line {n}: not a JSON record ({exc}); rerun that shard to repair it."
                ) from exc
    return out
