"""Benchmark: the truth series of one dopant's signal, and how the superposed method carries it.

One substitution in cubic supercells of growing size (64, 216, 512 atoms): the doped cell is
relaxed (``truth_cell``: free, positions and cell at zero pressure as a crystal is; clamped, in
the pristine lattice) and its phonons computed with ``full`` finite displacements (a single
substitution keeps the point group, so even 512 atoms cost tens of force calls), as is the
pristine cell of the same size. The difference spectrum per unit concentration,
(doped − pristine) × N, is the dopant's signal; it should not depend on N once the cell is
large. In each cell the superposed method (the host's defect library: the pristine force
constants with the dopant's 5 Å patch), its ``variants`` and the dopant's masses alone (pristine
force constants) are scored against ``full``: cosine and norm ratio of their difference
spectra. Spectra of finished cells are stored (``store``), so a rerun
only computes what is missing. Prints the table; asserts nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from defectnet.atomic import write_text_atomic
from defectnet.cli import CONF_DIR
from defectnet.datagen.phonons import cell_mesh_modes
from defectnet.datagen.recommender import Candidate
from defectnet.datagen.references import single_dopant_cell
from defectnet.datagen.simulate import relax_with
from defectnet.datagen.supercell import choose_supercell
from defectnet.difference import agreement
from defectnet.io import read_structure
from defectnet.spectra import EnergyGrid, spectrum_from_modes


def stored_name(
    truth_cell: str, host_cfg, n_atoms: int, variant: str = "", central: bool = False
) -> str:
    """A cell's file in ``store``: clamped truths (the first made) carry no suffix; truths made
    with central differences (``full.plusminus`` not false) end in ``-central``."""
    truth = "" if truth_cell == "clamped" else f"-{truth_cell}"
    tail = f"-{variant}" if variant else ("-central" if central else "")
    return f"{Path(host_cfg.structure).stem}-{host_cfg.dopant}-{n_atoms}{truth}{tail}.npz"


def central_steps(cfg) -> bool:
    """Whether the truth's displacements come with their opposites (``full.plusminus``)."""
    return cfg.full.plusminus is not False


def cell_spectra(cfg, ff, host_cfg, prim, n_atoms: int, grid: EnergyGrid, store: Path) -> dict:
    """The four spectra of one cell size (stored once computed) and what `full` cost."""
    path = store / stored_name(cfg.truth_cell, host_cfg, n_atoms, central=central_steps(cfg))
    if path.exists():
        return dict(np.load(path))
    full, superposed = instantiate(cfg.full), instantiate(cfg.superposed)

    def spectrum(modes):
        return spectrum_from_modes(modes.energies_mev, grid, cfg.spectra.fwhm_mev, modes.weights)

    _, pristine = choose_supercell(prim, n_atoms, n_atoms, where="sizes")
    doped = single_dopant_cell(pristine, host_cfg.dopant, host_cfg.replaces)
    t0 = time.perf_counter()
    free = {"relax_cell": True, "stress_tolerance": cfg.stress_tolerance}
    settings = {**cfg.relax, **(free if cfg.truth_cell == "free" else {}), **cfg.truth_relax}
    relaxed = relax_with(ff, doped, settings)
    relaxed = relaxed.atoms
    doped_modes = full.doped_modes(relaxed, None, ff)
    seconds = time.perf_counter() - t0
    pristine_modes = full.doped_modes(pristine, None, ff)
    out = {
        "n_atoms": np.array(len(pristine)),
        "calls": np.array(doped_modes.n_displacements),
        "seconds": np.array(seconds),
        "full_doped": spectrum(doped_modes),
        "full_pristine": spectrum(pristine_modes),
        **superposed_spectra(cfg, ff, superposed, host_cfg, prim, pristine, doped, spectrum),
    }
    store.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def superposed_spectra(cfg, ff, method, host_cfg, prim, pristine, doped, spectrum) -> dict:
    """The doped and pristine spectra of the cell from the host's defect library, and the
    doped one with the dopant's masses alone on the pristine force constants."""
    candidate = Candidate(host_cfg.dopant, host_cfg.replaces, "iso", "bench")
    library = method.host_reference(
        pristine,
        ff,
        host=prim,
        candidates=[candidate],
        relax=lambda atoms, fc: relax_with(ff, atoms, cfg.relax, fc),
    )
    estimate = library.relaxed_estimate(doped)
    return {
        "superposed_doped": spectrum(method.doped_modes(estimate, library, ff)),
        "superposed_pristine": spectrum(method.doped_modes(pristine, library, ff)),
        "masses_doped": spectrum(cell_mesh_modes(library.force_constants, doped, method.mesh)),
    }


def variant_spectra(cfg, ff, host_cfg, prim, n_atoms: int, grid, store: Path) -> dict:
    """Each ``variants`` entry (superposed settings) on the cell, stored like the cell; None
    where its patch cells are larger than the cell."""
    out = {}
    _, pristine = choose_supercell(prim, n_atoms, n_atoms, where="sizes")
    doped = single_dopant_cell(pristine, host_cfg.dopant, host_cfg.replaces)

    def spectrum(modes):
        return spectrum_from_modes(modes.energies_mev, grid, cfg.spectra.fwhm_mev, modes.weights)

    for name, overrides in (cfg.get("variants") or {}).items():
        method = instantiate(cfg.superposed, **overrides)
        if method.patch_atoms[0] > n_atoms:  # its patch cells are larger than the sample
            out[name] = None
            continue
        path = store / stored_name(cfg.truth_cell, host_cfg, n_atoms, name)
        if not path.exists():
            t0 = time.perf_counter()
            spectra = superposed_spectra(cfg, ff, method, host_cfg, prim, pristine, doped, spectrum)
            spectra["seconds"] = np.array(time.perf_counter() - t0)
            np.savez(path, **spectra)
        out[name] = dict(np.load(path))
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/dilute_series")
def main(cfg: DictConfig) -> None:
    if cfg.truth_cell not in ("free", "clamped"):
        raise SystemExit(f"truth_cell='{cfg.truth_cell}': choose free or clamped.")
    ff = instantiate(cfg.calculator)
    grid = EnergyGrid(cfg.spectra.e_min, cfg.spectra.e_max, cfg.spectra.n_points)
    store = Path(cfg.store)
    variants = list(cfg.get("variants") or {})
    other = "clamped" if cfg.truth_cell == "free" else "free"
    lines = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    emit(
        "| host:dopant | atoms | full calls | full s | full vs largest cell: cosine / norm "
        "ratio | superposed vs full: cosine / norm ratio | masses only vs full: cosine / norm "
        "ratio |"
        + "".join(f" {v} vs full |" for v in variants)
        + f" {other} truth vs {cfg.truth_cell} |"
        + "\n|---|---|---|---|---|---|---|"
        + "---|" * (len(variants) + 1)
    )
    for host_cfg in cfg.hosts:
        prim = relax_with(ff, read_structure(Path(host_cfg.structure)), cfg.parent_relax).atoms
        cells = [cell_spectra(cfg, ff, host_cfg, prim, n, grid, store) for n in cfg.sizes]
        per_unit = [
            {
                k: (c[f"{k}_doped"] - c[f"{k}_pristine"]) * c["n_atoms"]
                for k in ("full", "superposed")
            }
            | {"masses": (c["masses_doped"] - c["superposed_pristine"]) * c["n_atoms"]}
            for c in cells
        ]
        truth = per_unit[-1]["full"]
        for n, c, unit in zip(cfg.sizes, cells, per_unit):
            size = agreement(unit["full"], truth)
            sup = agreement(unit["superposed"], unit["full"])
            mass = agreement(unit["masses"], unit["full"])
            extra = ""
            for v in variant_spectra(cfg, ff, host_cfg, prim, n, grid, store).values():
                if v is None:
                    extra += " — |"
                    continue
                got = agreement(
                    (v["superposed_doped"] - v["superposed_pristine"]) * n, unit["full"]
                )
                extra += f" {got['cosine']:.2f} / {got['norm_ratio']:.2f} |"
            twin = store / stored_name(other, host_cfg, n, central=central_steps(cfg))
            if twin.exists():  # the same cell's truth made the other way, when stored
                t = np.load(twin)
                got = agreement((t["full_doped"] - t["full_pristine"]) * n, unit["full"])
                extra += f" {got['cosine']:.2f} / {got['norm_ratio']:.2f} |"
            else:
                extra += " — |"
            emit(
                f"| {Path(host_cfg.structure).stem}:{host_cfg.dopant} | {int(c['n_atoms'])} | "
                f"{int(c['calls'])} | {float(c['seconds']):.0f} | {size['cosine']:.2f} / "
                f"{size['norm_ratio']:.2f} | {sup['cosine']:.2f} / {sup['norm_ratio']:.2f} | "
                f"{mass['cosine']:.2f} / {mass['norm_ratio']:.2f} |{extra}"
            )
    if cfg.get("docs"):
        write_docs(cfg, lines)


def write_docs(cfg: DictConfig, lines: list[str]) -> None:
    """The table, dated, with the command and the machine, in docs/benchmarks."""
    import datetime
    import platform

    suffix = "" if cfg.truth_cell == "free" else f"_{cfg.truth_cell}"
    path = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / f"dilute_series{suffix}.md"
    overrides = " ".join(HydraConfig.get().overrides.task)
    steps = (
        "one-sided steps, residual forces subtracted"
        if cfg.full.plusminus is False
        else "central differences"
    )
    variants = "; ".join(
        f"{name}: {OmegaConf.to_container(v)}" for name, v in (cfg.variants or {}).items()
    )
    text = (
        "# One dopant's signal: the truth series and the superposed method\n\n"
        f"`python scripts/bench_dilute_series.py {overrides}` — "
        f"{datetime.date.today().isoformat()}, {platform.machine()} CPU, default potential "
        f"({cfg.calculator._target_.rsplit('.', 1)[-1]}). Per unit concentration, "
        "(doped − pristine) × N, of one substitution in cubic supercells of N atoms; `full`: "
        f"every displacement of the relaxed cell ({steps}), pristine of the same cell; "
        "superposed: the host's library (5 Å patch from a 64–128-atom dilute cell) in the "
        "same cell; masses only: the pristine force constants with the dopant's mass; the "
        f"other columns: superposed with these overrides, {variants}.\n\n" + "\n".join(lines) + "\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
