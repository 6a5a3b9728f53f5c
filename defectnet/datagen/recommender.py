"""Dopant candidates for a host: which elements could sit on which host sites.

The first choice is pymatgen's data-mined substitution probabilities (offline; needs
oxidation states and an anion in its table). Its p-type list also ranks anions on cation sites
(Br⁻, I⁻, S²⁻ for K⁺ in K₂O); a substitutional dopant keeps the sign of the ion it replaces, so
those are dropped. Hosts it cannot handle (elemental hosts,
arsenides, antimonides, tellurides, carbides, …) fall back to periodic-table neighbours of each
host element. User-given candidates override both. Every candidate records who proposed it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ase import Atoms

from defectnet.elements import DOPANTS, NOBLE_GASES, dopant_index


@dataclass(frozen=True)
class Candidate:
    """``dopant`` may replace ``replaces``; ``kind`` is n, p or iso; ``source`` who said so."""

    dopant: str
    replaces: str
    kind: str
    source: str
    score: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _allowed(symbol: str, host: set[str]) -> bool:
    return symbol in DOPANTS and symbol not in NOBLE_GASES and symbol not in host


def from_substitution_probabilities(atoms: Atoms, per_type: int) -> list[Candidate]:
    """pymatgen's substitution-probability predictor; raises where it has no data."""
    from pymatgen.analysis.structure_prediction.dopant_predictor import (
        get_dopants_from_substitution_probabilities,
    )
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure.add_oxidation_state_by_guess()
        if all(getattr(sp, "oxi_state", 0) == 0 for sp in structure.species):
            raise ValueError("no oxidation states could be guessed")
        found = get_dopants_from_substitution_probabilities(structure, num_dopants=4 * per_type)
    host = {el.symbol for el in structure.composition.elements}
    out: list[Candidate] = []
    for kind, key in (("n", "n_type"), ("p", "p_type")):
        picked = 0
        for item in found[key]:
            dopant = item["dopant_species"].element.symbol
            replaces = item["original_species"].element.symbol
            same_sign = item["dopant_species"].oxi_state * item["original_species"].oxi_state > 0
            if (
                same_sign
                and picked < per_type
                and _allowed(dopant, host)
                and dopant not in {c.dopant for c in out}
            ):
                out.append(
                    Candidate(
                        dopant,
                        replaces,
                        kind,
                        "pymatgen-substitution-probability",
                        float(item["probability"]),
                    )
                )
                picked += 1
    if not out:
        raise ValueError("no proposed dopant lies in the vocabulary")
    return out


def from_periodic_neighbours(atoms: Atoms) -> list[Candidate]:
    """Elements one group and one period around each host element (isovalent, n, p)."""
    from pymatgen.core import Element

    host = set(atoms.get_chemical_symbols())
    out: dict[str, Candidate] = {}
    for h in sorted(host):
        eh = Element(h)
        for symbol in DOPANTS:
            if not _allowed(symbol, host) or symbol in out:
                continue
            e = Element(symbol)
            dg, dr = e.group - eh.group, e.row - eh.row
            # Group 2 neighbours group 13 across the d block for main-group chemistry.
            if {e.group, eh.group} == {2, 13}:
                dg = 1 if e.group == 13 else -1
            if abs(dg) <= 1 and abs(dr) <= 1:
                kind = "iso" if dg == 0 else ("n" if dg > 0 else "p")
                out[symbol] = Candidate(
                    symbol, h, kind, "periodic-neighbours", 1.0 / (1 + abs(dg) + abs(dr))
                )
    return sorted(out.values(), key=lambda c: (-c.score, dopant_index(c.dopant)))


def from_user(atoms: Atoms, candidates: Sequence[str] | dict) -> list[Candidate]:
    """User candidates: a list of elements (placed on the most similar host element) or a
    mapping dopant → host element."""
    host = sorted(set(atoms.get_chemical_symbols()))
    mapping = dict(candidates) if isinstance(candidates, dict) else {c: None for c in candidates}
    out = []
    for dopant, replaces in mapping.items():
        dopant_index(dopant, where="candidates")
        if replaces is None:
            # the host element closest in group, then period
            from pymatgen.core import Element

            d = Element(dopant)
            replaces = min(
                host, key=lambda h: (abs(Element(h).group - d.group), abs(Element(h).row - d.row))
            )
        elif replaces not in host:
            raise ValueError(
                f"candidates: {dopant} is to replace {replaces}, which is not in "
                f"the host ({', '.join(host)}); name a host element."
            )
        out.append(Candidate(dopant, replaces, "user", "user"))
    return out


def recommend(atoms: Atoms, per_type: int = 4, candidates=None) -> list[Candidate]:
    """Candidates for a host: user list if given, else pymatgen, else periodic neighbours."""
    if candidates:
        return from_user(atoms, candidates)
    try:
        return from_substitution_probabilities(atoms, per_type)
    except (ValueError, KeyError, TypeError):
        return from_periodic_neighbours(atoms)[: 3 * per_type]
