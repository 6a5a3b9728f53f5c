"""Benchmark: can one-sided displacements make a defect patch as central ones do, at half the
force calls, when the pristine crystal's own one-sided error is taken out of every step?

A one-sided step u of atom i gives forces −Φu plus the anharmonic part b(i, u) (second order
in u). Central differences cancel b; one-sided steps leave it in every row of the doped
cell's force constants, so it enters ΔΦ over the whole patch. In the pristine crystal b(i, u)
is the same for every atom a lattice translation maps onto i, so the pristine b of each
(primitive atom, direction) pair — a handful of force calls — can be subtracted from each
doped step: what is left is ΔΦ plus the dopant's own change of b near it. For each dopant of
``conf/bench/forward_patches.yaml`` the doped dilute cell is relaxed once, then its near
atoms' force constants are made three ways: central (the library's ``plusminus: auto``),
one-sided, one-sided with the pristine b subtracted; each against central: the error of ΔΦ
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
from defectnet.datagen.phonons import FiniteDisplacement, gamma_modes, near_steps
from defectnet.datagen.relax import relax
from defectnet.datagen.supercell import choose_supercell
from defectnet.spectra import EnergyGrid, modes_spectrum

log = logging.getLogger("bench_forward_patches")


def translations(cell) -> list[np.ndarray]:
    """The permutations of ``cell``'s atoms by its pure lattice translations: ``perm[j]`` is
    the atom at atom j's position plus the translation."""
    import spglib

    data = spglib.get_symmetry((cell.cell[:], cell.get_scaled_positions(), cell.numbers))
    frac = cell.get_scaled_positions()
    perms = []
    for rot, shift in zip(data["rotations"], data["translations"]):
        if not np.array_equal(rot, np.eye(3, dtype=int)):
            continue
        moved = frac + shift
        diff = moved[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        perms.append(np.argmin(np.linalg.norm(diff @ cell.cell[:], axis=2), axis=1))
    return perms


def step_forces(phonon, doped, near, fc0, forcefield, plusminus):
    """Forces of each displacement of ``phonon`` (the near atoms' from the potential, less the
    relaxed cell's residual; the others from ``fc0``) and the displacements."""
    phonon.generate_displacements(distance=0.03, is_plusminus=plusminus)
    moves, forces, computed, cells = near_steps(phonon, doped, near, fc0)
    residual, *result = forcefield.forces([doped, *cells])
    forces[computed] = np.asarray(result) - residual
    return moves, forces, computed


def pristine_bias(dilute, moves, computed, fc0, forcefield) -> tuple[np.ndarray, int]:
    """b(i, u) of each computed step, from one pristine call per (translation orbit, u), and
    the number of calls (the residual's included)."""
    perms = translations(dilute)
    orbit_of = np.full(len(dilute), -1)
    to_atom = {}  # atom → (representative, permutation taking it there)
    for rep in range(len(dilute)):
        if orbit_of[rep] >= 0:
            continue
        for perm in perms:
            orbit_of[perm[rep]] = rep
            to_atom[int(perm[rep])] = (rep, perm)
    residual = forcefield.forces([dilute])[0]
    cache, bias = {}, np.zeros((len(moves), len(dilute), 3))
    for k in computed:
        i, u = moves[k]
        rep, perm = to_atom[i]
        key = (rep, tuple(np.round(u, 6)))
        if key not in cache:
            cell = dilute.copy()
            cell.positions[rep] += u
            forces = forcefield.forces([cell])[0] - residual
            cache[key] = forces + np.einsum("a,jab->jb", u, fc0[rep])
        bias[k][perm] = cache[key]
    return bias, len(cache) + 1


def versus(d: np.ndarray, ref: np.ndarray) -> str:
    """Cosine and norm ratio of difference spectrum ``d`` against ``ref``."""
    cos = float(d @ ref / np.linalg.norm(d) / np.linalg.norm(ref))
    return f"{cos:.3f} / {np.linalg.norm(d) / np.linalg.norm(ref):.2f}"


def fc_from(phonon, forces, near, fc0):
    phonon.forces = forces
    phonon.produce_force_constants()
    fc = phonon.force_constants
    fc[np.ix_(~near, near)] = fc[np.ix_(near, ~near)].transpose(1, 0, 3, 2)
    return fc


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/forward_patches")
def main(cfg: DictConfig) -> None:
    from phonopy import Phonopy

    from defectnet.datagen.phonons import to_phonopy_atoms

    ff = MatGLForceField()
    if cfg.compile_potential:
        ff.compile()
    grid = EnergyGrid()
    lines = [
        "| host | dopant | calls central / one-sided + pristine | ΔΦ error one-sided | "
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
        near = doped.get_distances(site, np.arange(len(doped)), mic=True) <= cfg.cutoff
        fcs, calls = {}, {}
        for name, plusminus in (("central", "auto"), ("one-sided", False)):
            start = time.perf_counter()
            phonon = Phonopy(to_phonopy_atoms(doped), np.eye(3, dtype=int), np.eye(3))
            moves, forces, computed = step_forces(phonon, doped, near, fc0, ff, plusminus)
            calls[name] = len(computed)
            fcs[name] = fc_from(phonon, forces.copy(), near, fc0)
            if name == "one-sided":
                bias, calls["pristine"] = pristine_bias(dilute, moves, computed, fc0, ff)
                phonon = Phonopy(to_phonopy_atoms(doped), np.eye(3, dtype=int), np.eye(3))
                phonon.generate_displacements(distance=0.03, is_plusminus=False)
                fcs["corrected"] = fc_from(phonon, forces - bias, near, fc0)
            seconds = time.perf_counter() - start
            log.info("%s %s: %d calls, %.0f s", case.dopant, name, len(computed), seconds)
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
            f"| {case.symbols} | {case.dopant} | {calls['central']} / {calls['one-sided']} + "
            f"{calls['pristine']} | "
            f"{error['one-sided']:.3f} | {error['corrected']:.3f} | "
            f"{versus(spectra['one-sided'], spectra['central'])} | "
            f"{versus(spectra['corrected'], spectra['central'])} |"
        )
        log.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
