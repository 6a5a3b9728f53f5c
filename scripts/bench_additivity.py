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
says what the library costs on top. With ``pairs_within`` (Å) every two dopants that close are
also computed together, and what they add by being together (ΔΦ of the pair less its two
singles) is added too: how much of what the singles miss is pairwise; with ``pair_cutoffs``
that interaction is also cut to the atoms within each reach of either dopant (a pair patch's
size).

    python scripts/bench_additivity.py [cells='[quartz-SiO2/16]'] [docs=true]
    python scripts/bench_additivity.py pairs_within=3.5 'pair_cutoffs=[4,6]'   # close pairs
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date
from pathlib import Path

import hydra
import numpy as np
from ase import Atoms
from hydra import compose
from omegaconf import DictConfig

from defectnet.atomic import write_text_atomic
from defectnet.cli import CONF_DIR
from defectnet.datagen.calculators.matgl import MatGLForceField
from defectnet.datagen.context import atoms_from_dict
from defectnet.datagen.phonons import FiniteDisplacement, cell_mesh_modes, symmetry_permutations
from defectnet.datagen.records import read_shards
from defectnet.datagen.settings import grid_from_config
from defectnet.datagen.simulate import relax_with
from defectnet.datagen.supercell import choose_supercell
from defectnet.difference import agreement
from defectnet.spectra import modes_spectrum

log = logging.getLogger("bench_additivity")


def site_map(cell: Atoms, symprec: float):
    """Each symmetry operation of ``cell`` as (Cartesian rotation, atom permutation)."""
    lattice = cell.cell[:].T  # columns are the lattice vectors
    return [
        (lattice @ rotation @ np.linalg.inv(lattice), perm)
        for rotation, perm in symmetry_permutations(cell, symprec)
    ]


def carried(delta: np.ndarray, rotation: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """ΔΦ computed with dopants at some sites, moved by one symmetry operation to their images."""
    out = np.empty_like(delta)
    out[np.ix_(perm, perm)] = np.einsum("ab,ijbc,dc->ijad", rotation, delta, rotation)
    return out


class Exact:
    """One host's supercell, its `full` force constants, and the exact ΔΦ of one dopant (or one
    pair of dopants) alone in it, each computed once per symmetry orbit and carried to the
    others."""

    def __init__(self, supercell: Atoms, ff, method: FiniteDisplacement, relax: DictConfig):
        self.supercell, self.ff, self.method, self.relax = supercell, ff, method, relax
        start = time.perf_counter()
        self.fc0 = self.force_constants(supercell)
        log.info("pristine supercell: %.0f s", time.perf_counter() - start)
        self.ops = site_map(supercell, method.symprec)
        self.distances = supercell.get_all_distances(mic=True)
        self.computed: dict[tuple, np.ndarray] = {}  # ((z, site), …) → ΔΦ

    def force_constants(self, cell: Atoms) -> np.ndarray:
        phonon = self.method.phonopy(cell, np.eye(3, dtype=int), self.ff)
        return np.asarray(phonon.force_constants)

    def delta(self, dopants: tuple[tuple[int, int], ...]) -> np.ndarray:
        """ΔΦ of these (atomic number, site) substitutions alone in the supercell, less the
        ΔΦ of each of them alone when there are several (what they add by being together)."""
        for key, delta in self.computed.items():
            if len(key) != len(dopants):
                continue
            for rotation, perm in self.ops:
                if sorted((z, int(perm[s])) for z, s in key) == sorted(dopants):
                    return carried(delta, rotation, perm)
        cell = self.supercell.copy()
        for z, site in dopants:
            cell.numbers[site] = z
        start = time.perf_counter()
        relaxed = relax_with(self.ff, cell, self.relax).atoms
        delta = self.force_constants(relaxed) - self.fc0
        if len(dopants) > 1:
            delta -= sum(self.delta((d,)) for d in dopants)
        log.info(
            "%s alone: %.0f s",
            " + ".join(f"{cell[s].symbol} on {s}" for _, s in dopants),
            time.perf_counter() - start,
        )
        self.computed[tuple(dopants)] = delta
        return delta


def within(delta: np.ndarray, distances: np.ndarray, sites: list[int], reach: float):
    """``delta`` on the pairs of atoms both within ``reach`` of one of ``sites``, each row's
    sum restored on its own atom (the acoustic sum rule): what a pair patch of that reach
    would carry."""
    near = (distances[sites] <= reach).any(axis=0)
    out = np.where((near[:, None] & near[None, :])[:, :, None, None], delta, 0.0)
    out[np.arange(len(out)), np.arange(len(out))] -= out.sum(axis=1)
    return out


def spectrum_of(fc: np.ndarray, cell: Atoms, method: FiniteDisplacement, truth: DictConfig):
    """The truth's spectrum route (q-mesh, resolution, weighting) for force constants ``fc``."""
    modes = cell_mesh_modes(fc, cell, method.mesh)
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
    hosts: dict[str, Exact] = {}
    pristine_of: dict[str, np.ndarray] = {}  # each host's pristine spectrum, the truth's route
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
            hosts[host_id] = Exact(supercell, ff, method, truth.relax)
            pristine_of[host_id] = spectrum_of(hosts[host_id].fc0, supercell, method, truth)
        exact, pristine = hosts[host_id], pristine_of[host_id]
        doped = atoms_from_dict(record.structure)
        sites = np.flatnonzero(doped.numbers != exact.supercell.numbers)
        assert len(sites) == sum(record.counts.values()), f"{sample_id}: atom order differs"
        dopants = [(int(doped.numbers[s]), int(s)) for s in sites]
        singles = exact.fc0 + sum(exact.delta((d,)) for d in dopants)
        distances = exact.distances
        close = [
            (a, b)
            for i, a in enumerate(dopants)
            for b in dopants[i + 1 :]
            if distances[a[1], b[1]] <= cfg.pairs_within
        ]
        interactions = [(pair, exact.delta(pair)) for pair in close]
        pairs = singles + sum((d for _, d in interactions), np.zeros_like(singles))
        truth_diff = np.asarray(record.doped) - np.asarray(record.pristine)
        row = {
            "cell": sample_id,
            "dopants": ", ".join(f"{k} {100 * v:.1f} %" for k, v in record.concentrations.items()),
            "pristine check": agreement(pristine, np.asarray(record.pristine))["cosine"],
            "exact singles": agreement(
                spectrum_of(singles, doped, method, truth) - pristine, truth_diff
            ),
            "close pairs": len(close),
        }
        if close:
            row["+ exact pairs"] = agreement(
                spectrum_of(pairs, doped, method, truth) - pristine, truth_diff
            )
        for reach in cfg.pair_cutoffs if close else ():
            cut = singles + sum(
                within(d, distances, [a[1], b[1]], reach) for (a, b), d in interactions
            )
            row[f"+ pairs cut at {reach:g} Å"] = agreement(
                spectrum_of(cut, doped, method, truth) - pristine, truth_diff
            )
        for name, recs in twins.items():
            twin = recs.get(sample_id)
            if twin is not None and twin.status == "ok":
                diff = np.asarray(twin.doped) - np.asarray(twin.pristine)
                row[Path(name).name] = agreement(diff, truth_diff)
        log.info("%s", row)
        rows.append(row)
    cuts = [f"+ pairs cut at {reach:g} Å" for reach in cfg.pair_cutoffs]
    table = markdown(
        rows, ["exact singles", "+ exact pairs", *cuts, *(Path(n).name for n in cfg.twins)]
    )
    print(table)
    if cfg.docs:
        path = Path(cfg.paths.root_dir) / "docs/benchmarks/additivity.md"
        head = f"\n## {date.today():%d %b %Y}: `python scripts/bench_additivity.py`\n\n"
        write_text_atomic(path, path.read_text() + head + table + "\n")


def markdown(rows: list[dict], cols: list[str]) -> str:
    """Difference spectrum against the truth, cosine / norm ratio, per cell."""
    lines = [
        "| cell | dopants | close pairs | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for row in rows:
        cells = [
            f"{row[c]['cosine']:.2f} / {row[c]['norm_ratio']:.2f}" if c in row else "—"
            for c in cols
        ]
        lines.append(
            f"| {row['cell']} | {row['dopants']} | {row['close pairs']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
