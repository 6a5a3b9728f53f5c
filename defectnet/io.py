"""Reading what a user brings: spectrum files (measured inelastic-neutron spectra) and crystal
structure files. Every problem names the file (and line) and what to fix.

A spectrum file holds two or more numeric columns (whitespace, comma, semicolon or tab
separated; ``#``/``%`` comments and one header line allowed): energy transfer and intensity.
The energy unit is never guessed: meV, THz or cm-1 must be given. It is cleaned and put on the
model's energy grid. A structure file is a CIF, POSCAR or extended-XYZ crystal read with ASE.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from ase import Atoms

from defectnet.elements import atomic_number
from defectnet.errors import UserError
from defectnet.spectra import THZ_TO_MEV, EnergyGrid, normalise, resample

UNITS = {"meV": 1.0, "THz": THZ_TO_MEV, "cm-1": 0.12398419843320026}
_SPLIT = re.compile(r"[,;\s]+")


class SpectrumFileError(UserError):
    """A measured-spectrum file that cannot be used as it is."""


def read_spectrum(
    path: str | Path, unit: str, energy_column: int = 0, intensity_column: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Energies (meV, strictly increasing, ≥ 0) and intensities (finite) from a text file."""
    path = Path(path)
    if unit not in UNITS:
        raise SpectrumFileError(
            f"{path}: unknown energy unit '{unit}'; use one of {', '.join(UNITS)}."
        )
    if not path.is_file():
        raise SpectrumFileError(f"{path}: no such file.")
    rows: list[tuple[int, float, float]] = []
    need = max(energy_column, intensity_column) + 1
    for n, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].split("%", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in _SPLIT.split(line) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not rows and not any(_is_number(f) for f in fields):
                continue  # a header line before the data
            raise SpectrumFileError(
                f"{path}, line {n}: '{raw.strip()}' is not numeric; "
                "remove the line or comment it with '#'."
            ) from None
        if len(values) < need:
            raise SpectrumFileError(
                f"{path}, line {n}: {len(values)} column(s), need {need} (energy in column "
                f"{energy_column}, intensity in column {intensity_column})."
            )
        e, y = values[energy_column], values[intensity_column]
        if not (math.isfinite(e) and math.isfinite(y)):
            raise SpectrumFileError(
                f"{path}, line {n}: NaN or infinite value; remove or fill that point."
            )
        if e < 0:
            raise SpectrumFileError(
                f"{path}, line {n}: negative energy {e} {unit}; keep only "
                "the energy-loss side (E ≥ 0)."
            )
        if rows and e <= rows[-1][1]:
            raise SpectrumFileError(
                f"{path}, line {n}: energy {e} {unit} does not increase "
                f"(previous {rows[-1][1]}); sort the file by energy."
            )
        rows.append((n, e, y))
    if len(rows) < 2:
        raise SpectrumFileError(
            f"{path}: fewer than two numeric data lines; expected columns of energy and intensity."
        )
    data = np.array([(e, y) for _, e, y in rows], dtype=np.float64)
    return data[:, 0] * UNITS[unit], data[:, 1]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def prepare(
    energies_mev: np.ndarray,
    intensity: np.ndarray,
    grid: EnergyGrid,
    elastic_cutoff_mev: float = 0.0,
    background: str | float | None = None,
) -> np.ndarray:
    """Cut the elastic line, subtract a background, resample onto the grid, unit area.

    ``background``: None (none), ``"min"`` (the smallest intensity above the cut-off) or a
    constant in the file's intensity units. Negative intensities left after it are set to 0.
    """
    keep = energies_mev >= elastic_cutoff_mev
    if keep.sum() < 2:
        raise UserError(f"elastic_cutoff_mev={elastic_cutoff_mev} removes every point.")
    e, y = energies_mev[keep], intensity[keep].astype(np.float64)
    if background == "min":
        y = y - y.min()
    elif background is not None:
        y = y - float(background)
    return normalise(resample(e, np.clip(y, 0, None), grid), grid)


def load_measured(path: str | Path, unit: str, grid: EnergyGrid, **kwargs) -> np.ndarray:
    """``read_spectrum`` then ``prepare``: a measured spectrum as the model sees it."""
    return prepare(*read_spectrum(path, unit), grid, **kwargs)


PARENT_FILE_PATTERNS = ("*.cif", "POSCAR*", "*.vasp", "*.poscar", "*.extxyz", "*.xyz")


def read_structure(path: Path) -> Atoms:
    """Read one crystal file with ASE; errors name the file and what to fix."""
    from ase.io import read

    try:
        atoms = read(str(path), index=0)
    except Exception as exc:  # ASE raises many types for malformed files
        raise UserError(
            f"{path}: could not be read as a crystal structure ({type(exc).__name__}: {exc}); "
            "check that it is a valid CIF, POSCAR or extended-XYZ file."
        ) from exc
    if len(atoms) == 0:
        raise UserError(f"{path}: the structure holds no atoms.")
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise UserError(f"{path}: the structure needs a full periodic cell (3 lattice vectors).")
    for s in set(atoms.get_chemical_symbols()):
        atomic_number(s, where=str(path))
    return atoms
