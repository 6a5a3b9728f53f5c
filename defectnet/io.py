"""Reading what a user brings: spectrum files (measured inelastic-neutron spectra) and crystal
structure files. Every problem names the file (and line) and what to fix.

A spectrum file is read by the first reader in ``SPECTRUM_READERS`` whose file pattern it
matches: NumPy arrays (``.npy``: columns energy, intensity; ``.npz``: arrays ``energy`` and
``intensity``), and otherwise text with two or more numeric columns (whitespace, comma,
semicolon or tab separated; ``#``/``%`` comments and one header line allowed). A new format is
one function registered with ``spectrum_reader``. The energy unit is never guessed: meV, THz or
cm-1 must be given. It is cleaned and put on the model's energy grid. A structure file (CIF,
POSCAR, extended XYZ: ``STRUCTURE_FILE_PATTERNS``) is a crystal read with ASE; ``input_kind``
tells the two apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
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


SpectrumReader = Callable[[Path], list[tuple[str, float, float]]]
SPECTRUM_READERS: list[tuple[str, tuple[str, ...], SpectrumReader]] = []


def spectrum_reader(name: str, *patterns: str) -> Callable[[SpectrumReader], SpectrumReader]:
    """Register a reader for spectrum files matching ``patterns`` (``*`` only as the catch-all,
    tried last): it returns the file's points as (where, energy, intensity) in the file's own
    unit; the checks and the unit conversion are shared."""

    def register(reader: SpectrumReader) -> SpectrumReader:
        SPECTRUM_READERS.append((name, patterns, reader))
        return reader

    return register


def read_spectrum(path: str | Path, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Energies (meV, strictly increasing, ≥ 0) and intensities (finite) from a spectrum file,
    read by the first registered reader whose pattern the file matches."""
    path = Path(path)
    if unit not in UNITS:
        raise SpectrumFileError(
            f"{path}: unknown energy unit '{unit}'; use one of {', '.join(UNITS)}."
        )
    if path.is_dir():
        raise SpectrumFileError(f"{path}: a folder; pass a spectrum or structure file.")
    if not path.is_file():
        raise SpectrumFileError(f"{path}: no such file.")
    catch_all_last = sorted(SPECTRUM_READERS, key=lambda entry: "*" in entry[1])
    reader = next(r for _, patterns, r in catch_all_last if any(path.match(p) for p in patterns))
    rows: list[tuple[int, float, float]] = []
    for where, e, y in reader(path):
        if not (math.isfinite(e) and math.isfinite(y)):
            raise SpectrumFileError(
                f"{path}, {where}: NaN or infinite value; remove or fill that point."
            )
        if e < 0:
            raise SpectrumFileError(
                f"{path}, {where}: negative energy {e} {unit}; keep only "
                "the energy-loss side (E ≥ 0)."
            )
        if rows and e <= rows[-1][1]:
            raise SpectrumFileError(
                f"{path}, {where}: energy {e} {unit} does not increase "
                f"(previous {rows[-1][1]}); sort the file by energy."
            )
        rows.append((where, e, y))
    if len(rows) < 2:
        raise SpectrumFileError(
            f"{path}: fewer than two data points; expected columns of energy and intensity."
        )
    data = np.array([(e, y) for _, e, y in rows], dtype=np.float64)
    return data[:, 0] * UNITS[unit], data[:, 1]


@spectrum_reader("text", "*")
def read_text_columns(
    path: Path, energy_column: int = 0, intensity_column: int = 1
) -> list[tuple[str, float, float]]:
    """Columns of numbers; ``#``/``%`` comments and a header line before the data."""
    rows: list[tuple[str, float, float]] = []
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
        rows.append((f"line {n}", values[energy_column], values[intensity_column]))
    return rows


@spectrum_reader("numpy", "*.npy", "*.npz")
def read_numpy(path: Path) -> list[tuple[str, float, float]]:
    """An ``.npy`` array of rows (energy, intensity, …) or an ``.npz`` with ``energy`` and
    ``intensity`` arrays, as NumPy writes them (never pickled objects)."""
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if not {"energy", "intensity"} <= set(data.files):
                    raise SpectrumFileError(
                        f"{path}: holds arrays {sorted(data.files)}, needs 'energy' and "
                        "'intensity'; save it with np.savez(path, energy=..., intensity=...)."
                    )
                columns = np.stack([np.ravel(data["energy"]), np.ravel(data["intensity"])], 1)
        else:
            columns = data
    except (ValueError, OSError) as exc:
        raise SpectrumFileError(f"{path}: not a NumPy array file ({exc}).") from None
    if columns.ndim != 2 or columns.shape[1] < 2 or not np.issubdtype(columns.dtype, np.number):
        raise SpectrumFileError(
            f"{path}: array of shape {columns.shape} ({columns.dtype}); expected numeric rows of "
            "(energy, intensity)."
        )
    return [(f"row {i}", float(e), float(y)) for i, (e, y) in enumerate(columns[:, :2])]


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


STRUCTURE_FILE_PATTERNS = ("*.cif", "POSCAR*", "*.vasp", "*.poscar", "*.extxyz", "*.xyz")


def input_kind(path: Path) -> str:
    """``structure`` for a crystal file (simulated before it is read), else ``spectrum``."""
    return "structure" if any(path.match(p) for p in STRUCTURE_FILE_PATTERNS) else "spectrum"


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
