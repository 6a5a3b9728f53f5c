"""Parents from a folder of crystal files."""

from __future__ import annotations

from pathlib import Path

from defectnet.datagen.parents.base import Parent, ParentSource
from defectnet.io import STRUCTURE_FILE_PATTERNS, read_structure


class FileParents(ParentSource):
    """Every crystal file in a folder; the id is the file name without its extension."""

    def __init__(self, folder: str):
        self.folder = Path(folder).expanduser()

    def parents(self) -> list[Parent]:
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"parents.folder: '{self.folder}' is not a folder; point it at a folder of "
                "CIF / POSCAR / extxyz files."
            )
        files = sorted({p for pat in STRUCTURE_FILE_PATTERNS for p in self.folder.glob(pat)})
        if not files:
            raise FileNotFoundError(
                f"parents.folder: '{self.folder}' holds no file matching {STRUCTURE_FILE_PATTERNS}."
            )
        out = []
        for path in files:
            atoms = read_structure(path)
            out.append(Parent(path.stem, atoms.get_chemical_formula(empirical=True), "file", atoms))
        return out
