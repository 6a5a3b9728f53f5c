"""Benchmark: can one-sided displacements make a defect patch as central ones do, at half the
force calls, when the pristine crystal's own one-sided error is taken out of every step?

A one-sided step u of atom i gives forces −Φu plus the anharmonic part b(i, u) (second order
in u). Central differences cancel b; one-sided steps leave it in every row of the doped
cell's force constants, so it enters ΔΦ over the whole patch. In the pristine crystal b(i, u)
is the same for every atom a lattice translation maps onto i, so the pristine b of each
(primitive atom, direction) pair — a handful of force calls — can be subtracted from each
doped step: what is left is ΔΦ plus the dopant's own change of b near it. For each dopant of
``conf/bench/forward_patches.yaml`` the doped dilute cell is relaxed once, then its near
atoms' force constants are made by ``phonons=embedded`` three ways: central (``plusminus:
auto``, as the libraries' patches), one-sided (``false``), one-sided with the pristine b
subtracted (``corrected``, ``OneSidedError``); each against central: the error of ΔΦ
(its near rows, relative to central's) and the cosine / norm ratio of the cell's difference
spectrum (Γ modes of the dilute cell, doped − pristine).

    python scripts/bench_forward_patches.py
"""

from __future__ import annotations

import logging
import time

import hydra
import numpy as np
from ase.build import bulk
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR
from defectnet.datagen.calculators.matgl import MatGLForceField
from defectnet.datagen.phonons import (
    EmbeddedForceConstants,
    FiniteDisplacement,
    HostForceConstants,
    gamma_modes,
)
from defectnet.datagen.relax import relax
from defectnet.datagen.supercell import choose_supercell
from defectnet.difference import agreement
from defectnet.spectra import EnergyGrid, modes_spectrum

log = logging.getLogger("bench_forward_patches")

STEPS = {"central": "auto", "one-sided": False, "corrected": "corrected"}


def versus(d: np.ndarray, ref: np.ndarray) -> str:
    """Cosine and norm ratio of difference spectrum ``d`` against ``ref``."""
    match = agreement(d, ref)
    return f"{match['cosine']:.3f} / {match['norm_ratio']:.2f}"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/forward_patches")
def main(cfg: DictConfig) -> None:
    ff = MatGLForceField()
    if cfg.compile_potential:
        ff.compile()
    grid = EnergyGrid()
    lines = [
        "| host | dopant | force calls central / one-sided / corrected | ΔΦ error one-sided | "
        "ΔΦ error corrected | difference spectrum vs central: one-sided cos / norm | "
        "corrected cos / norm |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cfg.cases:
        host = bulk(case.symbols, case.structure, a=case.a, c=case.get("c"))
        host = relax(host, ff.calculator(), relax_cell=True).atoms
        _, dilute = choose_supercell(host, *cfg.patch_atoms)
        central = FiniteDisplacement(displacement=0.03, plusminus="auto")
        fc0 = np.asarray(central.phonopy(dilute, np.eye(3, dtype=int), ff).force_constants)
        pristine_spectrum = modes_spectrum(gamma_modes(fc0, dilute), grid, 3.0)
        site = int(np.flatnonzero(np.array(dilute.get_chemical_symbols()) == case.replaces)[0])
        doped = dilute.copy()
        doped[site].symbol = case.dopant
        doped = relax(doped, ff.calculator(), fmax=0.01, force_constants=fc0).atoms
        fcs, calls = {}, {}
        for name, plusminus in STEPS.items():
            method = EmbeddedForceConstants(cfg.cutoff, plusminus=plusminus)
            reference = HostForceConstants(dilute.numbers.copy(), fc0, 0, pristine=dilute)
            start = time.perf_counter()
            phonon, calls[name] = method.phonopy_doped(doped, reference, ff)
            fcs[name] = np.asarray(phonon.force_constants)
            log.info(
                "%s %s: %d calls, %.0f s",
                case.dopant,
                name,
                calls[name],
                time.perf_counter() - start,
            )
        near = method.near_dopants(doped, reference)
        delta = {k: (v - fc0)[near] for k, v in fcs.items()}
        spectra = {
            k: modes_spectrum(gamma_modes(v, doped), grid, 3.0) - pristine_spectrum
            for k, v in fcs.items()
        }
        error = {
            k: float(np.linalg.norm(delta[k] - delta["central"]) / np.linalg.norm(delta["central"]))
            for k in ("one-sided", "corrected")
        }
        lines.append(
            f"| {case.symbols} | {case.dopant} | {calls['central']} / {calls['one-sided']} / "
            f"{calls['corrected']} | "
            f"{error['one-sided']:.3f} | {error['corrected']:.3f} | "
            f"{versus(spectra['one-sided'], spectra['central'])} | "
            f"{versus(spectra['corrected'], spectra['central'])} |"
        )
        log.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
