"""Append-only JSON-lines record shards and atomic JSON files.

A record is appended with a single write and flushed to disk, so a killed run leaves at most one
torn last line (no newline); opening the shard again cuts that line off, says so, and everything
before it counts as done. Any other line that is not a record stops the run with its file and
line, and the file is left as it is: a record once written is never deleted. A finished shard
is compressed (``.jsonl.gz``, byte-reproducible) so that large data sets stay small enough to
commit; records added to it later go to a fresh ``.jsonl`` beside it until
it is finished again. Other outputs go through ``defectnet.atomic``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from defectnet.atomic import atomic_path
from defectnet.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provenance:
    """Where a sample comes from and how it was made; ``settings_hash`` covers every setting
    that defines the data set."""

    parent_id: str
    formula: str
    calculator: dict
    phonons: dict
    settings_hash: str
    seed: list[int]
    defectnet: str


@dataclass(frozen=True)
class Record:
    """One sample: what generation writes (a JSON line) and consolidate reads. A failed sample
    has its ``reason`` and none of the sample fields."""

    sample_id: str  # "<parent id>/<index>"
    index: int
    provenance: Provenance
    status: str = "ok"  # ok | failed
    reason: str | None = None
    n_atoms: int | None = None
    doped_formula: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # dopant atoms in the cell
    concentrations: dict[str, float] = field(default_factory=dict)  # fractions of all atoms
    candidates: list[dict] = field(default_factory=list)  # offered: dopants and distractors
    distractors: list[str] = field(default_factory=list)
    pristine: list[float] | None = None
    doped: list[float] | None = None
    spectra: dict | None = None  # grid, fwhm_mev, weighting the spectra were made with
    structure: dict | None = None  # positions, or sites of the host supercell
    composition: list[float] | None = None  # host composition over Z = 1…100
    relax: dict | None = None
    phonons: dict | None = None  # force calls per sample and per library, lowest mode
    timing: dict | None = None

    def with_sample(self, sample: dict) -> Record:
        return replace(self, **sample)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> Record:
        """A record read from JSON; records of older versions lack some optional fields."""
        known = {f.name for f in fields(cls)}
        try:
            provenance = Provenance(**data["provenance"])
            return cls(
                **{**{k: v for k, v in data.items() if k in known}, "provenance": provenance}
            )
        except (KeyError, TypeError) as exc:
            raise UserError(
                f"{where}: not a DefectNet record ({type(exc).__name__}: {exc}); rerun that "
                "shard to repair it."
            ) from exc


def compressed(path: Path) -> Path:
    return path.with_name(path.name + ".gz")


def _json_lines(raw: bytes, path: Path) -> tuple[list[Record], int]:
    """Records of a JSON-lines text and the length of its intact part. Only a torn tail (a last
    line with no newline: a write cut off by a kill) falls outside it; any complete line that is
    not a record is an error naming the file and the line, so a record is never dropped."""
    records, good_end = [], 0
    for n, line in enumerate(raw.splitlines(keepends=True), 1):
        if not line.endswith(b"\n"):
            break  # torn final write from a killed run
        try:
            records.append(Record.from_dict(json.loads(line), f"{path}, line {n}"))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}, line {n}: not a JSON record ({exc}); the file is left as it is: "
                "restore it from version control, or move the line out and rerun that shard."
            ) from exc
        good_end += len(line)
    return records, good_end


def torn_tail(raw: bytes, good_end: int, path: Path) -> str | None:
    """What a torn tail holds, in words (None: the file ends with a whole record)."""
    if good_end == len(raw):
        return None
    line = raw[:good_end].count(b"\n") + 1
    return f"{path}, line {line}: {len(raw) - good_end} bytes of a record cut off by a stopped run"


def _read_compressed(path: Path) -> list[Record]:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise UserError(
            f"{path}: not a readable gzip file ({exc}); restore it from version control or "
            "delete it to regenerate that shard."
        ) from exc
    return _json_lines(raw, path)[0]


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
        self.records: list[Record] = []
        if compressed(self.path).exists():
            self.records = _read_compressed(compressed(self.path))
        if self.path.exists():
            self._load_and_repair()

    def _load_and_repair(self) -> None:
        """Read the plain shard; a torn tail (and only that) is cut off, with a warning."""
        raw = self.path.read_bytes()
        records, good_end = _json_lines(raw, self.path)
        self.records += records
        torn = torn_tail(raw, good_end, self.path)
        if torn:
            log.warning("%s: cut off; that sample is made again", torn)
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)

    def compress(self) -> None:
        """Fold every record into ``<shard>.jsonl.gz`` (written whole or not at all), then
        drop the plain file."""
        text = "".join(_line(r) for r in self.records)
        target = compressed(self.path)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as gz:
                gz.write(text.encode())
        self.path.unlink(missing_ok=True)

    @property
    def done(self) -> set[str]:
        return {r.sample_id for r in self.records}

    def append(self, record: Record) -> None:
        line = _line(record).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(record)


def _line(record: Record) -> str:
    return json.dumps(record.to_dict(), separators=(",", ":")) + "\n"


def read_shards(records_dir: Path, skipped: list[str] | None = None) -> list[Record]:
    """Every record of every shard in a folder, compressed or not; files left untouched. A torn
    tail is not read, and is named in ``skipped`` when a list is given; any other line that is
    not a record is an error."""
    out = []
    for path in sorted(Path(records_dir).glob("shard-*.jsonl.gz")):
        out += _read_compressed(path)
    for path in sorted(Path(records_dir).glob("shard-*.jsonl")):
        raw = path.read_bytes()
        records, good_end = _json_lines(raw, path)
        out += records
        torn = torn_tail(raw, good_end, path)
        if torn and skipped is not None:
            skipped.append(torn)
    return out
