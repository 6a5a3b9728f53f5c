"""A host's single-dopant reference spectra: what NNLS unmixing and the reference-informed
network read about an unseen host.

``defectnet-generate stage=references`` writes, per parent, the pristine PDoS and the PDoS of a
cell with one dopant at a known concentration. Their difference scaled to unit concentration is
the dopant's signature in that host; a sample's own difference is, to first order, the
concentration-weighted sum of its dopants' signatures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from defectnet.elements import DOPANTS, N_DOPANTS
from defectnet.errors import UserError


class ReferenceError(UserError):
    """Single-dopant reference spectra that are missing or do not fit the data set."""


def load_references(folder: str | Path) -> dict[str, dict]:
    """``references/<parent id>.json`` files written by ``defectnet-generate stage=references``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ReferenceError(
            f"{folder}: no single-dopant references; compute them with "
            "defectnet-generate generate=<preset> stage=references (same preset as the data set)."
        )
    loaded = [json.loads(f.read_text()) for f in files]
    return {ref["parent_id"]: ref for ref in loaded}


def reference_columns(ref: dict, slots) -> list[np.ndarray | None]:
    """Each offered dopant's single-dopant difference spectrum at unit concentration, from a
    host's references; None where the host has no reference for it."""
    pristine = np.asarray(ref["pristine"])
    entries = [ref["dopants"].get(DOPANTS[slot]) for slot in slots]
    return [
        (np.asarray(e["spectrum"]) - pristine) / e["concentration"] if e is not None else None
        for e in entries
    ]


def reference_matrix(ref: dict, n_points: int, where: str = "references") -> torch.Tensor:
    """[56, n_points]: every vocabulary dopant's unit-concentration difference spectrum in one
    host, zeros where it has none (the network reads a zero row as "no reference")."""
    if len(ref["pristine"]) != n_points:
        raise ReferenceError(
            f"{where}: parent '{ref['parent_id']}' has references on {len(ref['pristine'])} "
            f"energy points, the data set on {n_points}; compute them with the data set's preset."
        )
    out = torch.zeros(N_DOPANTS, n_points)
    for slot, column in enumerate(reference_columns(ref, range(N_DOPANTS))):
        if column is not None:
            out[slot] = torch.as_tensor(column, dtype=out.dtype)
    return out


def references_for_host(spec: str | Path, host: str, required: bool = True) -> dict | None:
    """One host's references for prediction: ``spec`` is a ``stage=references`` JSON file
    (used as given) or a folder of them, where the host is found by its formula (a parent id
    ends with it: ``zincblende-GaAs``). Not found: an error, or None when not ``required``."""
    from defectnet.elements import formula_composition

    path = Path(spec).expanduser()
    if path.is_file():
        return json.loads(path.read_text())
    if not required and not any(path.glob("*.json")):
        return None
    references = load_references(path)
    want = formula_composition(host)
    matches = []
    for parent_id in references:
        try:
            composition = formula_composition(parent_id.rsplit("-", 1)[-1])
        except UserError:  # an id that does not end with a formula
            continue
        if np.allclose(composition, want):
            matches.append(parent_id)
    if not matches and not required:
        return None
    if not matches:
        raise ReferenceError(
            f"references: no single-dopant references for host {host} in {path} "
            f"({len(references)} hosts); compute them with defectnet-generate stage=references "
            "for a parent set holding it and pass references=<its folder or JSON file>."
        )
    if len(matches) > 1:
        raise ReferenceError(
            f"references: {len(matches)} hosts in {path} have the formula {host} "
            f"({', '.join(matches)}); pass references={path}/<one of them>.json."
        )
    return references[matches[0]]


def host_references(folder: str | Path, parents: list[str], n_points: int) -> torch.Tensor:
    """[P, 56, n_points]: ``reference_matrix`` of each parent, in the order of ``parents``."""
    references = load_references(folder)
    missing = sorted(set(parents) - set(references))
    if missing:
        raise ReferenceError(
            f"{folder}: no single-dopant references for {len(missing)} parents of the data set "
            f"({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}); run "
            "defectnet-generate stage=references with the data set's preset."
        )
    return torch.stack([reference_matrix(references[p], n_points, str(folder)) for p in parents])
