"""The dopant vocabulary and the host composition vector.

One ordered tuple, ``DOPANTS`` (Z = 1…56, H to Ba), fixes the meaning of every 56-long
candidate vector and every 56-long output of the model. Noble gases keep their slots so the
indices equal Z - 1, but they are never proposed as dopants.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from defectnet.errors import UserError

N_DOPANTS = 56
N_COMPOSITION = 100

DOPANTS: tuple[str, ...] = tuple(chemical_symbols[1 : N_DOPANTS + 1])
NOBLE_GASES: frozenset[str] = frozenset({"He", "Ne", "Ar", "Kr", "Xe"})
PROPOSABLE: tuple[str, ...] = tuple(s for s in DOPANTS if s not in NOBLE_GASES)


class UnknownElementError(UserError):
    """An element symbol that is not a chemical element, or lies outside a vocabulary."""


def atomic_number(symbol: str, *, where: str = "input") -> int:
    """Return Z for a symbol, with an error that names the bad symbol and where it came from."""
    z = atomic_numbers.get(symbol)
    if z is None or z == 0:
        raise UnknownElementError(
            f"{where}: '{symbol}' is not a chemical element symbol; "
            "use a capitalised symbol such as 'Si' or 'Ga'."
        )
    return z


def dopant_index(symbol: str, *, where: str = "input") -> int:
    """Index of an element in ``DOPANTS``; errors for elements beyond Ba or noble gases."""
    z = atomic_number(symbol, where=where)
    if z > N_DOPANTS:
        raise UnknownElementError(
            f"{where}: '{symbol}' (Z={z}) is outside the dopant vocabulary (Z = 1…{N_DOPANTS}, "
            f"H to Ba); choose a candidate among {', '.join(PROPOSABLE)}."
        )
    if symbol in NOBLE_GASES:
        raise UnknownElementError(
            f"{where}: '{symbol}' is a noble gas; noble gases are never dopant candidates."
        )
    return z - 1


def candidate_vector(symbols: Iterable[str], *, where: str = "candidates") -> np.ndarray:
    """56-long float32 0/1 vector with ones at the given dopants."""
    vec = np.zeros(N_DOPANTS, dtype=np.float32)
    for s in symbols:
        vec[dopant_index(s, where=where)] = 1.0
    return vec


def concentration_vector(
    concentrations: dict[str, float], *, where: str = "concentrations"
) -> np.ndarray:
    """56-long float32 vector of concentrations (fraction of supercell atoms)."""
    vec = np.zeros(N_DOPANTS, dtype=np.float32)
    for s, c in concentrations.items():
        if not 0.0 <= c <= 1.0:
            raise UserError(f"{where}: concentration of {s} is {c}; it must lie in [0, 1].")
        vec[dopant_index(s, where=where)] = c
    return vec


def composition_vector(symbols: Iterable[str], *, where: str = "host") -> np.ndarray:
    """Atomic fraction per Z = 1…100 (float32, length 100, sums to 1)."""
    counts = Counter(symbols)
    if not counts:
        raise UserError(f"{where}: the structure has no atoms.")
    vec = np.zeros(N_COMPOSITION, dtype=np.float32)
    total = sum(counts.values())
    for s, n in counts.items():
        z = atomic_number(s, where=where)
        if z > N_COMPOSITION:
            raise UnknownElementError(
                f"{where}: '{s}' (Z={z}) is beyond Z = {N_COMPOSITION}, the length of the "
                "composition vector; such hosts are not supported."
            )
        vec[z - 1] = n / total
    return vec


def formula_composition(formula: str) -> np.ndarray:
    """Composition vector from a formula such as 'GaAs' or 'Cu2ZnSnS4'."""
    from ase.formula import Formula

    try:
        counts = Formula(formula).count()
    except ValueError as exc:
        raise UnknownElementError(
            f"host formula '{formula}': not a chemical formula ({exc or 'unreadable'}); write it "
            "like GaAs or Cu2ZnSnS4."
        ) from exc
    symbols = [s for s, n in counts.items() for _ in range(n)]
    return composition_vector(symbols, where=f"host formula '{formula}'")
