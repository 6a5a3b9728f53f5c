"""Benchmark: how real are the pipeline's phonon spectra? Prints figures, asserts nothing.

For every crystal of NCrystal's standard library that the pipeline can simulate, each calculator
relaxes it and computes its pristine spectrum through the pipeline's own parent stage
(``prepare_parent``: same relaxation, supercell rule, phonon method, grid and broadening); the
reference DOS curve is put on the same grid at the same resolution. Per crystal and calculator:
cosine similarity, ratio of mean phonon energies (below 1: the potential is too soft) and shift
of the top peak (the highest-energy peak that carries weight); then the medians over the
crystals that every calculator simulated, the top peak of a few crystals against measured
values, and the seconds per force call on a ~480-atom cell.

    python scripts/bench_fidelity.py                                  # every usable crystal
    python scripts/bench_fidelity.py calculators=[matgl] parents.files=[Si_sg227,Ge_sg227]

Writes ``fidelity.md`` (the tables) and ``fidelity.png`` (overlaid curves) to ``out_dir``;
parent results are kept under ``out_dir/<calculator>-<settings hash>/`` and reused by a rerun.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import numpy as np
from ase.build import bulk
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from tqdm import tqdm

from defectnet.atomic import write_text_atomic
from defectnet.cli import CONF_DIR, calculator_config
from defectnet.datagen.context import Context
from defectnet.datagen.hosts import prepare_parent
from defectnet.datagen.settings import grid_from_config, settings_hash
from defectnet.datagen.supercell import choose_supercell
from defectnet.plots import spectra_overlay
from defectnet.spectra import agreement, peak_energy

METRICS = ("cosine", "mean_energy_ratio", "peak_shift_mev")


def seconds_per_call(forcefield, n_atoms: tuple[int, int], calls: int) -> tuple[int, float]:
    """Mean wall time of ``calls`` force calls on a Si supercell within ``n_atoms`` (after one
    warm-up call); each call sees a different rattle, so nothing is cached."""
    _, cell = choose_supercell(bulk("Si", "diamond", a=5.43), *n_atoms, where="timing")
    cells = []
    for k in range(calls + 1):
        rattled = cell.copy()
        rattled.rattle(0.01, seed=k)
        cells.append(rattled)
    forcefield.forces(cells[:1])
    t0 = time.perf_counter()
    forcefield.forces(cells[1:])
    return len(cell), (time.perf_counter() - t0) / calls


def simulate(cfg: DictConfig, name: str, parents: list, grid) -> tuple[dict, dict]:
    """Each parent's state from the parent stage with calculator ``name``, and its timing."""
    run = cfg.copy()
    with open_dict(run):
        run.calculator = calculator_config(name)
    forcefield = instantiate(run.calculator)
    h = settings_hash(run)
    ctx = Context(
        run, forcefield, instantiate(run.phonons), grid, Path(cfg.out_dir) / f"{name}-{h}", h
    )
    states = {}
    for parent in tqdm(parents, desc=name, disable=not cfg.progress):
        states[parent.id] = prepare_parent(ctx, parent)
    atoms, seconds = seconds_per_call(forcefield, tuple(cfg.timing_atoms), int(cfg.timing_calls))
    timing = {"version": forcefield.version, "atoms": atoms, "seconds_per_call": seconds}
    return states, timing


def crystal_table(names, parents, rows) -> list[str]:
    head = "| crystal | " + " | ".join(
        f"{n} cosine | {n} ⟨E⟩ ratio | {n} peak Δ meV" for n in names
    )
    lines = [head + " |", "|---" * (1 + 3 * len(names)) + "|"]
    for parent in parents:
        cells = []
        for n in names:
            row = rows[n].get(parent.id)
            if isinstance(row, str):
                cells += [row, "", ""]
            else:
                cells += [
                    f"{row['cosine']:.3f}",
                    f"{row['mean_energy_ratio']:.3f}",
                    f"{row['peak_shift_mev']:+.1f}",
                ]
        lines.append(f"| {parent.id} | " + " | ".join(cells) + " |")
    return lines


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/fidelity")
def main(cfg: DictConfig) -> None:
    grid = grid_from_config(cfg)
    fwhm, weighting = float(cfg.spectra.fwhm_mev), cfg.spectra.weighting
    source = instantiate(cfg.parents)
    parents = source.parents()
    references = {p.id: source.reference(p.id).spectrum(grid, fwhm, weighting) for p in parents}
    print(
        f"{len(parents)} reference crystals; grid {grid.e_min:g}–{grid.e_max:g} meV, "
        f"{grid.n_points} points, FWHM {fwhm} meV, {weighting} DOS",
        flush=True,
    )
    names = list(cfg.calculators)
    rows: dict[str, dict] = {}
    spectra: dict[str, dict] = {}
    timings: dict[str, dict] = {}
    for name in names:
        states, timings[name] = simulate(cfg, name, parents, grid)
        rows[name], spectra[name] = {}, {}
        for pid, state in states.items():
            if state["status"] != "ok":
                rows[name][pid] = state["status"]
                continue
            spectrum = np.asarray(state["pristine"])
            spectra[name][pid] = spectrum
            rows[name][pid] = {
                **agreement(spectrum, references[pid], grid, cfg.peak_min_height),
                "top_peak_mev": peak_energy(spectrum, grid, cfg.peak_min_height),
                "seconds": state["seconds"],
            }
    common = [p.id for p in parents if all(p.id in spectra[n] for n in names)]
    lines = ["# Phonon fidelity against NCrystal reference DOS", ""]
    lines += crystal_table(names, parents, rows)
    lines += ["", f"Medians over the {len(common)} crystals that every calculator simulated:", ""]
    lines += [
        "| calculator | cosine | ⟨E⟩ ratio | peak Δ meV | ok / discarded / failed | "
        "s per force call (atoms) | version |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        med = {m: float(np.median([rows[n][p][m] for p in common])) for m in METRICS}
        status = [r if isinstance(r, str) else "ok" for r in rows[n].values()]
        counts = " / ".join(str(status.count(s)) for s in ("ok", "discarded", "failed"))
        t = timings[n]
        lines.append(
            f"| {n} | {med['cosine']:.3f} | {med['mean_energy_ratio']:.3f} | "
            f"{med['peak_shift_mev']:+.1f} | {counts} | {t['seconds_per_call']:.2f} "
            f"({t['atoms']}) | {t['version']} |"
        )
    lines += [
        "",
        "Top peak against measured values (meV):",
        "",
        "| crystal | measured | reference DOS | " + " | ".join(names) + " |",
        "|---" * (3 + len(names)) + "|",
    ]
    for pid, measured in cfg.checks.items():
        if pid not in references:
            continue
        ref_peak = peak_energy(references[pid], grid, cfg.peak_min_height)
        sims = []
        for n in names:
            row = rows[n].get(pid)
            sims.append(
                row
                if isinstance(row, str)
                else f"{row['top_peak_mev']:.1f} ({row['top_peak_mev'] / measured - 1:+.1%})"
            )
        lines.append(f"| {pid} | {measured} | {ref_peak:.1f} | " + " | ".join(sims) + " |")
    report = "\n".join(lines) + "\n"
    out = Path(cfg.out_dir)
    write_text_atomic(out / "fidelity.md", report)
    shown = [pid for pid in cfg.plot if pid in references]
    if shown:
        curves = {
            pid: {
                "reference": references[pid],
                **{n: spectra[n][pid] for n in names if pid in spectra[n]},
            }
            for pid in shown
        }
        spectra_overlay(grid.energies, curves, out / "fidelity.png")
    print(report)
    print(f"written: {out / 'fidelity.md'}" + (f", {out / 'fidelity.png'}" if shown else ""))


if __name__ == "__main__":
    main()
