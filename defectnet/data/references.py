"""A host's single-dopant reference spectra: what NNLS unmixing and the reference-informed
network read about an unseen host.

``defectnet-generate stage=references`` writes, per parent, the pristine PDoS and, per dopant,
the PDoS of a cell with one dopant site and of cells with a fraction of all atoms substituted
(``"high"``: about 10 %; ``"dense"``: about 20 %, where it was asked for), all made with the
host's phonon method in its supercell, and, where asked for, an ``"alloy"`` cell: about 20 % in a
small cell relaxed with its lattice and computed with every displacement, which holds the
dopants' interactions with one another and the lattice they settle to, which the superposed
denser cells lack (such an entry carries its own pristine spectrum, of the same small cell). A
difference from the pristine scaled to unit concentration is the dopant's signature in that host
at that concentration; a sample's own difference is, to first order, the concentration-weighted
sum of its dopants' dilute signatures, and the denser signatures show how a dopant's response
bends away from linear as its concentration grows.

A host's references as a tensor (``reference_matrix``) are one block of 56 rows per level of
``LEVELS``; a zero row means "no such reference". A model reads the levels it was built with.
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


# the concentration levels of a host's references, in the order of reference_matrix's blocks
LEVELS = ("dilute", "high", "dense", "alloy")
# what two-point NNLS and the reference-informed network read unless told otherwise
TWO_POINT = ("dilute", "high")
# three-point NNLS: the levels made with the host's own phonon method
THREE_POINT = ("dilute", "high", "dense")
# NNLS read beside the two-point one wherever the references hold the last of its levels
NNLS_VARIANTS = {"NNLS, three-point": THREE_POINT, "NNLS, alloy": ("dilute", "high", "alloy")}
# for spectra of real crystals: the relaxed alloy cell computed in full, read in the slot of
# the superposed dense cell a network was trained with (both hold about 20 % of the dopant)
FAITHFUL_DENSE = {"dense": "alloy"}


def level_entry(entry: dict | None, level: str) -> dict | None:
    """A dopant's reference cell at one ``level``: its entry itself for the dilute cell, the
    denser cells being entries inside it; None where there is none."""
    if entry is None or level == "dilute":
        return entry
    return entry.get(level)


def holds_level(ref: dict, level: str) -> bool:
    """Whether any dopant of a host's references has a cell at ``level``."""
    return any(level_entry(e, level) is not None for e in ref["dopants"].values())


def reference_columns(ref: dict, slots, level: str = "dilute") -> list[np.ndarray | None]:
    """Each offered dopant's difference spectrum at unit concentration at one ``level`` of
    ``LEVELS``, from a host's references; None where the host has no such reference."""
    entries = [level_entry(ref["dopants"].get(DOPANTS[slot]), level) for slot in slots]
    return [
        (np.asarray(e["spectrum"]) - np.asarray(e.get("pristine", ref["pristine"])))
        / e["concentration"]
        if e is not None
        else None
        for e in entries
    ]


def reference_overlap(ref: dict) -> float:
    """Median cosine between a host's dilute signatures, dopant against dopant: near 1 the
    dopants change the host's spectrum alike (in BeO and CaO mostly by broadening the same
    sharp bands) and no unmixing of a difference spectrum tells them apart well."""
    slots = [DOPANTS.index(d) for d in ref["dopants"] if d in DOPANTS]
    columns = [c for c in reference_columns(ref, slots) if c is not None and np.any(c)]
    if len(columns) < 2:
        return float("nan")
    unit = np.array([c / np.linalg.norm(c) for c in columns])
    cosines = unit @ unit.T
    return float(np.median(cosines[~np.eye(len(unit), dtype=bool)]))


def reference_stand_ins(setting) -> dict[str, str]:
    """``reference_stand_ins`` ({level: level read in its place}, or null for none), checked."""
    stand_ins = dict(setting or {})
    wrong = {k: v for k, v in stand_ins.items() if k not in LEVELS or v not in LEVELS}
    if wrong:
        raise ReferenceError(
            f"reference_stand_ins: {wrong} — each key and value must be one of {list(LEVELS)} "
            f"(e.g. {FAITHFUL_DENSE}), or null for none."
        )
    return stand_ins


def reference_matrix(
    ref: dict, n_points: int, where: str = "references", stand_ins: dict[str, str] | None = None
) -> torch.Tensor:
    """[LEVELS × 56, n_points]: every vocabulary dopant's unit-concentration difference spectrum
    in one host at each level, zeros where it has none (the network reads a zero row as "no
    reference"). ``stand_ins`` ({level: other level}, e.g. ``FAITHFUL_DENSE``) fills a level's
    rows from the other level wherever a dopant has that one."""
    if len(ref["pristine"]) != n_points:
        raise ReferenceError(
            f"{where}: parent '{ref['parent_id']}' has references on {len(ref['pristine'])} "
            f"energy points, the data set on {n_points}; compute them with the data set's preset."
        )
    out = torch.zeros(len(LEVELS), N_DOPANTS, n_points)
    stand_ins = stand_ins or {}
    for level, block in zip(LEVELS, out):
        columns = reference_columns(ref, range(N_DOPANTS), level)
        if level in stand_ins:
            others = reference_columns(ref, range(N_DOPANTS), stand_ins[level])
            columns = [c if other is None else other for c, other in zip(columns, others)]
        for slot, column in enumerate(columns):
            if column is not None:
                block[slot] = torch.as_tensor(column, dtype=out.dtype)
    return out.flatten(0, 1)


def host_formula(ref: dict, folder: Path) -> np.ndarray | None:
    """The composition of a reference file's host: its own ``formula``, else that of the
    parent record beside the references (``../parents/<id>.json``), else the formula that ends
    its parent id (``zincblende-GaAs``); None when none tells."""
    from defectnet.elements import formula_composition

    parent = folder.parent / "parents" / f"{ref['parent_id']}.json"
    for formula in (
        ref.get("formula"),
        json.loads(parent.read_text()).get("formula") if parent.is_file() else None,
        ref["parent_id"].rsplit("-", 1)[-1],
    ):
        if formula:
            try:
                return formula_composition(formula)
            except UserError:  # an id that does not end with a formula
                continue
    return None


def references_for_host(spec: str | Path, host: str) -> dict:
    """One host's references for prediction: ``spec`` is a ``stage=references`` JSON file
    (used as given) or a folder of them, where the host is found by its composition (the
    references' own formula or their parent's, not the file name)."""
    from defectnet.elements import formula_composition

    path = Path(spec).expanduser()
    if path.is_file():
        return json.loads(path.read_text())
    if not path.is_dir():
        raise ReferenceError(
            f"references={path}: no such file or folder; pass the host's references "
            "(defectnet-generate generate=references parents.folder=<its structure> "
            "stage=references), or references=none for the spectrum-only model."
        )
    references = load_references(path)
    want = formula_composition(host)
    held = {pid: host_formula(ref, path) for pid, ref in references.items()}
    matches = [pid for pid, c in held.items() if c is not None and np.allclose(c, want)]
    if not matches:
        listed = ", ".join(sorted(held)[:8]) + (" …" if len(held) > 8 else "")
        raise ReferenceError(
            f"references={path}: no single-dopant references for host {host} among its "
            f"{len(references)} hosts ({listed}); make them with defectnet-generate "
            "generate=references parents.folder=<a folder with its structure> "
            "stage=references, or pass references=none for the spectrum-only model."
        )
    if len(matches) > 1:
        raise ReferenceError(
            f"references: {len(matches)} hosts in {path} have the formula {host} "
            f"({', '.join(matches)}); pass references={path}/<one of them>.json."
        )
    return references[matches[0]]


def host_references(
    folder: str | Path,
    parents: list[str],
    n_points: int,
    stand_ins: dict[str, str] | None = None,
) -> torch.Tensor:
    """[P, LEVELS × 56, n_points]: ``reference_matrix`` of each parent (with ``stand_ins``), in
    the order of ``parents``."""
    references = load_references(folder)
    missing = sorted(set(parents) - set(references))
    if missing:
        raise ReferenceError(
            f"{folder}: no single-dopant references for {len(missing)} parents of the data set "
            f"({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}); run "
            "defectnet-generate stage=references with the data set's preset."
        )
    return torch.stack(
        [reference_matrix(references[p], n_points, str(folder), stand_ins) for p in parents]
    )
