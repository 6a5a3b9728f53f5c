"""Benchmark, without a force call: what would pair patches (``phonons.pair_reach``) cost a
generated set's defect libraries?

A library computes one pair patch per orbit of dopant pairs its samples hold within
``reach`` × the host's nearest-neighbour distance (the pair's two elements, its first site's
kind and the bond vector up to that site's symmetry, as ``DefectLibrary.pair_at`` tells them
apart). For every host of the set: its samples, those holding such a pair, the orbits, and for
a few orbits (``costed``) the force calls one pair patch takes at each ``pair_cutoffs`` (one-sided
displacements of the atoms near either dopant, placed in the host's dilute cell), summed
over the orbits and put in minutes of one core (``seconds_per_atom_call``).

    python scripts/bench_pair_orbits.py                          # pretrain_v3's samples
    python scripts/bench_pair_orbits.py reach=1.2 every=2
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
from ase.neighborlist import neighbor_list
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR
from defectnet.datagen.context import atoms_from_dict
from defectnet.datagen.defect_library import (
    host_site_of,
    nearest_neighbour_distance,
    site_classes,
    wrap_to_atoms,
)
from defectnet.datagen.phonons import SuperposedForceConstants, near_displacement_count
from defectnet.datagen.records import Record, read_shards
from defectnet.datagen.samples import sample_structure


def pair_orbits(records: list[Record], state: dict, reach: float) -> tuple[Counter, int]:
    """Each orbit of dopant pairs within ``reach`` × the nearest-neighbour distance, with how
    often the samples hold it, and the number of samples that hold any."""
    host = atoms_from_dict(state["structure"])
    classes = site_classes(host)
    orbits: Counter = Counter()
    with_pair = 0
    for record in records:
        cell = sample_structure(record, state)
        kind_of = classes.of_atom[host_site_of(cell, host)]
        dopants = np.zeros(len(cell), dtype=bool)
        dopants[[i for sites in record.structure["sites"].values() for i in sites]] = True
        cut = reach * nearest_neighbour_distance(cell)
        first, second, vectors = neighbor_list("ijD", cell, cut)
        keep = dopants[first] & dopants[second] & (first < second)
        with_pair += bool(keep.any())
        symbols = cell.get_chemical_symbols()
        for i, j, v in zip(first[keep], second[keep], vectors[keep], strict=True):
            keys = []
            for a, b, w in ((i, j, v), (j, i, -v)):
                kind = int(kind_of[a])
                rep = int(classes.representative[kind])
                images = classes.site_ops[rep] @ (classes.rotation[kind].T @ w)
                canonical = images[np.lexsort(np.round(images, 2).T[::-1])[-1]]
                keys.append((symbols[a], rep, symbols[b], tuple(np.round(canonical, 2) + 0.0)))
            orbits[min(keys)] += 1
    return orbits, with_pair


def pair_calls(dilute, kind_of: np.ndarray, orbit, cutoffs) -> list[int]:
    """Force calls of one pair patch of ``orbit`` in the ``dilute`` cell (``kind_of``: each of
    its atoms' kind of site) at each cutoff."""
    _, rep, _, vector = orbit
    a = int(np.flatnonzero(kind_of == rep)[0])
    b = int(wrap_to_atoms(dilute, a, np.asarray(vector)[None])[0])
    if b < 0:
        raise ValueError(f"no atom at {vector} from site {a} of the dilute cell")
    return [near_displacement_count(dilute, [a, b], cutoff)[0] for cutoff in cutoffs]


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/pair_orbits")
def main(cfg: DictConfig) -> None:
    method = SuperposedForceConstants(
        patch_atoms=cfg.patch_atoms, patch_symmetric_atoms=cfg.symmetric_atoms
    )
    root = Path(cfg.data_dir) / cfg.preset
    cutoffs = list(cfg.pair_cutoffs)
    heads = " | ".join(f"calls at {c:g} Å, minutes" for c in cutoffs)
    print(f"pair orbits within {cfg.reach:g}× the nearest-neighbour distance, {cfg.preset}")
    print(f"| host | samples (with a pair) | pairs | orbits | {heads} |")
    print("|---|---|---|---|" + "---|" * len(cutoffs))
    by_parent: dict[str, list[Record]] = {}
    for record in read_shards(root / "records"):
        if record.status == "ok":
            by_parent.setdefault(record.provenance.parent_id, []).append(record)
    for parent, records in sorted(by_parent.items())[:: cfg.every]:
        state = json.loads((root / "parents" / f"{parent}.json").read_text())
        orbits, with_pair = pair_orbits(records, state, cfg.reach)
        host = atoms_from_dict(state["structure"])
        dilute = method.dilute_supercell(host)
        kind_of = site_classes(host).of_atom[host_site_of(dilute, host)]
        # the orbits most samples need first: what a library would compute first
        costed = [
            pair_calls(dilute, kind_of, o, cutoffs) for o, _ in orbits.most_common(cfg.costed)
        ]
        cells = []
        for calls in zip(*costed, strict=True) if costed else [[0]] * len(cutoffs):
            total = np.mean(calls) * len(orbits)
            minutes = total * len(dilute) * cfg.seconds_per_atom_call / 60
            cells.append(f"{np.mean(calls):.0f} each, {minutes:.0f}")
        print(
            f"| {parent} | {len(records)} ({with_pair}) | {sum(orbits.values())} | "
            f"{len(orbits)} | " + " | ".join(cells) + " |"
        )


if __name__ == "__main__":
    main()
