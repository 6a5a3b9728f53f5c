"""Benchmark: do a dense cell's dopants add up?

A superposed sample is the pristine force constants plus one single-dopant change ΔΦ per
dopant. Where dopants are many and close (several per cent of one species in ~100 atoms), that
sum can miss the truth for two reasons: each patch is not the dopant's exact ΔΦ (cut, taken
from another cell), or the ΔΦs do not add (dopants change each other's bonds and relaxation).
This script separates the two on the realism cells. For each cell (``conf/bench/additivity.yaml``)
every dopant species on every kind of site is computed alone in the same supercell, with the
truth's settings (relaxed at zero pressure, `full` central differences); its ΔΦ is carried to
each site of the cell by the supercell's symmetry operations, and the cell is rebuilt as
pristine + Σ ΔΦ (exact singles) on the truth's q-mesh. Its difference spectrum (doped −
pristine) against the truth's says what additivity alone costs; the twins' against the truth
says what the library costs on top.

    python scripts/bench_additivity.py [cells='[quartz-SiO2/16]'] [docs=true]
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date
from pathlib import Path

import hydra
import numpy as np
import spglib
from ase import Atoms
from hydra import compose
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR
from defectnet.datagen.calculators.matgl import MatGLForceField
from defectnet.datagen.context import atoms_from_dict
from defectnet.datagen.phonons import FiniteDisplacement, mesh_modes, to_phonopy_atoms
from defectnet.datagen.records import read_shards
from defectnet.datagen.settings import grid_from_config
from defectnet.datagen.simulate import relax_with
from defectnet.datagen.supercell import choose_supercell
from defectnet.difference import agreement
from defectnet.spectra import modes_spectrum

log = logging.getLogger("bench_additivity")


def site_map(cell: Atoms, symprec: float):
    """Each symmetry operation of ``cell`` as (Cartesian rotation, atom permutation)."""
    ops = spglib.get_symmetry(
        (cell.cell[:], cell.get_scaled_positions(), cell.numbers), symprec=symprec
    )
    frac = cell.get_scaled_positions()
    lattice = cell.cell[:].T  # columns are the lattice vectors
    out = []
    for rot, trans in zip(ops["rotations"], ops["translations"], strict=True):
        moved = frac @ rot.T + trans
        diff = moved[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        perm = np.argmin(np.linalg.norm(diff @ lattice.T, axis=2), axis=1)
        out.append((lattice @ rot @ np.linalg.inv(lattice), perm))
    return out


def carrier(singles: dict, z: int, site: int, ops: list) -> tuple | None:
    """A computed single of species ``z`` and the operation that carries it onto ``site``."""
    for zz, source in singles:
        for i, (_, perm) in enumerate(ops):
            if zz == z and perm[source] == site:
                return z, source, i
    return None


def carried(delta: np.ndarray, rotation: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """ΔΦ of a dopant at site s moved by one symmetry operation to site perm[s]."""
    out = np.empty_like(delta)
    out[np.ix_(perm, perm)] = np.einsum("ab,ijbc,dc->ijad", rotation, delta, rotation)
    return out


def spectrum_of(fc: np.ndarray, cell: Atoms, method: FiniteDisplacement, truth: DictConfig):
    """The truth's spectrum route (q-mesh, resolution, weighting) for force constants ``fc``."""
    from phonopy import Phonopy

    phonon = Phonopy(to_phonopy_atoms(cell), supercell_matrix=np.eye(3), primitive_matrix=np.eye(3))
    phonon.force_constants = fc
    modes = mesh_modes(phonon, method.mesh, 0)
    weighting = truth.spectra.get("weighting", "total")
    return modes_spectrum(modes, grid_from_config(truth), float(truth.spectra.fwhm_mev), weighting)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/additivity")
def main(cfg: DictConfig) -> None:
    truth = compose(config_name="generate", overrides=[f"generate={cfg.truth}"])
    data = Path(cfg.paths.data_dir)
    records = {r.sample_id: r for r in read_shards(data / truth.name / "records")}
    twins = {
        name: {r.sample_id: r for r in read_shards(data / Path(name).name / "records")}
        for name in cfg.twins
    }
    ff = MatGLForceField()
    if cfg.compile_potential:
        ff.compile()
    method = FiniteDisplacement(**{k: v for k, v in truth.phonons.items() if k != "_target_"})
    eye = np.eye(3, dtype=int)
    hosts: dict[str, tuple] = {}
    rows = []
    for sample_id in cfg.cells:
        record = records[sample_id]
        host_id = sample_id.split("/")[0]
        if host_id not in hosts:
            state = json.loads((data / truth.name / "parents" / f"{host_id}.json").read_text())
            _, supercell = choose_supercell(
                atoms_from_dict(state["structure"]),
                truth.supercell.min_atoms,
                truth.supercell.max_atoms,
                where=host_id,
            )
            start = time.perf_counter()
            fc0 = np.asarray(method.phonopy(supercell, eye, ff).force_constants)
            log.info("%s pristine: %.0f s", host_id, time.perf_counter() - start)
            hosts[host_id] = (supercell, fc0, site_map(supercell, method.symprec), {})
        supercell, fc0, ops, singles = hosts[host_id]
        doped = atoms_from_dict(record.structure)
        sites = np.flatnonzero(doped.numbers != supercell.numbers)
        assert len(sites) == sum(record.counts.values()), f"{sample_id}: atom order differs"
        total = fc0.copy()
        for site in sites:
            z = int(doped.numbers[site])
            key = carrier(singles, z, site, ops)
            if key is None:
                single = supercell.copy()
                single.numbers[site] = z
                start = time.perf_counter()
                relaxed = relax_with(ff, single, truth.relax).atoms
                phonon = method.phonopy(relaxed, eye, ff)
                singles[(z, site)] = np.asarray(phonon.force_constants) - fc0
                log.info(
                    "%s: %s on site %d alone, %d force calls, %.0f s",
                    sample_id,
                    doped[site].symbol,
                    site,
                    method.n_calls(phonon),
                    time.perf_counter() - start,
                )
                key = carrier(singles, z, site, ops)
            z, source, op = key
            rotation, perm = ops[op]
            total += carried(singles[(z, source)], rotation, perm)
        truth_diff = np.asarray(record.doped) - np.asarray(record.pristine)
        pristine = spectrum_of(fc0, supercell, method, truth)
        summed = spectrum_of(total, doped, method, truth) - pristine
        row = {
            "cell": sample_id,
            "dopants": ", ".join(f"{k} {100 * v:.1f} %" for k, v in record.concentrations.items()),
            "pristine check": agreement(pristine, np.asarray(record.pristine))["cosine"],
            "exact singles": agreement(summed, truth_diff),
        }
        for name, recs in twins.items():
            twin = recs.get(sample_id)
            if twin is not None and twin.status == "ok":
                diff = np.asarray(twin.doped) - np.asarray(twin.pristine)
                row[Path(name).name] = agreement(diff, truth_diff)
        log.info("%s", row)
        rows.append(row)
    table = markdown(rows, [Path(n).name for n in cfg.twins])
    print(table)
    if cfg.docs:
        path = Path(cfg.paths.root_dir) / "docs/benchmarks/additivity.md"
        head = f"\n## {date.today():%d %b %Y}: `python scripts/bench_additivity.py`\n\n"
        with path.open("a") as f:
            f.write(head + table + "\n")


def markdown(rows: list[dict], twins: list[str]) -> str:
    """Difference spectrum against the truth, cosine / norm ratio, per cell."""
    cols = ["exact singles", *twins]
    lines = [
        "| cell | dopants | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for row in rows:
        cells = [
            f"{row[c]['cosine']:.2f} / {row[c]['norm_ratio']:.2f}" if c in row else "—"
            for c in cols
        ]
        lines.append(f"| {row['cell']} | {row['dopants']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
