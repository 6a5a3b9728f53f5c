"""Benchmark, without a force call: what does a dilute cell that keeps the host's point group
(``phonons.patch_symmetric_atoms``) save a host's defect library?

A patch costs one force call per displacement of its near atoms that the doped dilute cell's
symmetry does not supply, each call on the whole cell. For every parent file given, one patch per
kind of site (the representatives of ``site_classes``) is counted in the most compact cell of
``patch_atoms`` and in the cell ``patch_symmetric_atoms`` picks: phonopy's one-sided
displacements of the atoms within ``cutoff`` of the site, times the cell's atoms (a force call
costs about its atoms). Printed: the two cells (atoms, smallest image distance, the site-symmetry
order of the first site) and the ratio of the summed costs.

    python scripts/bench_dilute_symmetry.py                       # pretrain_v3's parents
    python scripts/bench_dilute_symmetry.py parent_states=data/pretrain/parents every=3
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR
from defectnet.datagen.context import atoms_from_dict
from defectnet.datagen.defect_library import host_site_of, site_classes
from defectnet.datagen.phonons import SuperposedForceConstants, near_displacement_count
from defectnet.datagen.supercell import image_distance


def cost(host, cell, cutoff: float) -> tuple[int, int]:
    """Force calls × cell atoms of one patch per kind of site, and the first site's symmetry."""
    classes = site_classes(host)
    of_cell = classes.of_atom[host_site_of(cell, host)]
    total, first = 0, None
    for kind in np.unique(classes.representative):
        site = int(np.flatnonzero(of_cell == kind)[0])
        calls, order = near_displacement_count(cell, site, cutoff)
        total += calls * len(cell)
        first = first or order
    return total, first


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/dilute_symmetry")
def main(cfg: DictConfig) -> None:
    compact = SuperposedForceConstants(cutoff=cfg.cutoff, patch_atoms=cfg.patch_atoms)
    symmetric = SuperposedForceConstants(
        cutoff=cfg.cutoff, patch_atoms=cfg.patch_atoms, patch_symmetric_atoms=cfg.symmetric_atoms
    )
    print("| parent | compact cell: atoms, images Å, site symmetry | symmetric cell | cost ratio |")
    print("|---|---|---|---|")
    for path in sorted(Path(cfg.parent_states).glob("*.json"))[:: cfg.every]:
        state = json.loads(path.read_text())
        host = atoms_from_dict(state["structure"])
        cells = [method.dilute_supercell(host) for method in (compact, symmetric)]
        (before, order0), (after, order1) = (cost(host, c, cfg.cutoff) for c in cells)
        a, b = (f"{len(c)}, {image_distance(c):.1f}" for c in cells)
        print(f"| {state['id']} | {a}, {order0} | {b}, {order1} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
