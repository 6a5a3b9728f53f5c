"""Benchmark: a clamped cell's uniform strain, and where one dopant's signal lives without it.

One substitution in a cubic supercell (``size`` atoms). Full force constants (finite
displacements; a single substitution keeps the point group) of the doped cell relaxed clamped
(positions only, in the pristine lattice) and free (positions and cell, zero pressure), of the
pristine cell, and of the pristine cell strained by ``strain_step`` (dΦ/dε). ε, the clamped
cell's uniform strain, is the strain that moves the pristine cell's pressure to the clamped
doped cell's. Printed per host, each against the free cell's difference spectrum (doped −
pristine; cosine / norm ratio): the clamped cell's; the clamped ΔΦ less ε·dΦ/dε, whole and
kept on the pairs that touch an atom within each of ``radii`` of the dopant (what a
``uniform_strain=removed`` patch of that reach carries); the dopant's mass alone. Force
constants are stored (``store``), so a rerun only computes what is missing. Asserts nothing.
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import hydra
import numpy as np
from ase import Atoms
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from defectnet.atomic import write_text_atomic
from defectnet.cli import CONF_DIR
from defectnet.datagen.defect_library import StrainResponse, local_sum_rule
from defectnet.datagen.phonons import mesh_modes, own_cell_phonopy
from defectnet.datagen.references import single_dopant_cell
from defectnet.datagen.simulate import relax_with
from defectnet.datagen.supercell import choose_supercell
from defectnet.difference import agreement
from defectnet.io import read_structure
from defectnet.spectra import EnergyGrid, spectrum_from_modes

EYE = np.eye(3, dtype=int)


def force_constants(cfg, ff, host_cfg, store: Path) -> dict:
    """Clamped, free, pristine and strained-pristine force constants of one host (stored)."""
    path = store / f"{Path(host_cfg.structure).stem}-{host_cfg.dopant}-{cfg.size}.npz"
    if path.exists():
        return dict(np.load(path))
    full = instantiate(cfg.full)
    prim = relax_with(ff, read_structure(Path(host_cfg.structure)), cfg.parent_relax).atoms
    _, pristine = choose_supercell(prim, cfg.size, cfg.size, where="size")
    doped = single_dopant_cell(pristine, host_cfg.dopant, host_cfg.replaces)
    clamped = relax_with(ff, doped, cfg.relax).atoms
    free_relax = {**cfg.relax, "relax_cell": True, "stress_tolerance": cfg.stress_tolerance}
    free = relax_with(ff, doped, free_relax).atoms
    strained = pristine.copy()
    strained.set_cell(pristine.cell[:] * (1 + cfg.strain_step), scale_atoms=True)
    out = {
        "fc_clamped": full.phonopy(clamped, EYE, ff).force_constants,
        "fc_free": full.phonopy(free, EYE, ff).force_constants,
        "fc_pristine": full.phonopy(pristine, EYE, ff).force_constants,
        "fc_strained": full.phonopy(strained, EYE, ff).force_constants,
        "p_pristine": ff.pressure(pristine),
        "p_clamped": ff.pressure(clamped),
        "p_strained": ff.pressure(strained),
        "numbers": doped.numbers,
        "pristine_numbers": pristine.numbers,
        "positions": pristine.positions,
        "cell": pristine.cell[:],
        "free_cell": free.cell[:],
        "clamped_positions": clamped.positions,
        "free_positions": free.positions,
    }
    store.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def host_rows(cfg, fc: dict, grid: EnergyGrid) -> tuple[dict[str, dict], float, float]:
    """Every variant's agreement with the free cell's difference spectrum."""
    from phonopy.harmonic.force_constants import symmetrize_force_constants

    n = len(fc["numbers"])
    full = instantiate(cfg.full)
    doped = Atoms(numbers=fc["numbers"], positions=fc["positions"], cell=fc["cell"], pbc=True)
    pristine = doped.copy()
    pristine.set_atomic_numbers(fc["pristine_numbers"])

    def spectrum(atoms, constants, restore_sum_rule=False):
        constants = np.array(constants)
        if restore_sum_rule:  # a cut ΔΦ breaks it, as a patch does (sum_rule=local)
            constants = local_sum_rule(constants)
            symmetrize_force_constants(constants, level=2)
        phonon = own_cell_phonopy(atoms, full.symprec)
        phonon.force_constants = constants
        modes = mesh_modes(phonon, full.mesh, 0)
        return spectrum_from_modes(modes.energies_mev, grid, cfg.spectra.fwhm_mev, modes.weights)

    base = spectrum(pristine, fc["fc_pristine"])
    free_atoms = Atoms(numbers=fc["numbers"], positions=fc["positions"], cell=fc["free_cell"])
    free_atoms.pbc = True
    free_atoms.set_scaled_positions(doped.get_scaled_positions())
    truth = spectrum(free_atoms, fc["fc_free"]) - base
    step = float(cfg.strain_step)
    derivative = (fc["fc_strained"] - fc["fc_pristine"]) / step
    stiffness = (fc["p_strained"] - fc["p_pristine"]) / step
    eps = StrainResponse(derivative, fc["p_pristine"], stiffness, 0).strain_of(fc["p_clamped"])
    local = fc["fc_clamped"] - fc["fc_pristine"] - eps * derivative
    site = int(np.flatnonzero(fc["numbers"] != fc["pristine_numbers"])[0])
    r = pristine.get_distances(site, np.arange(n), mic=True)
    closer = np.minimum(r[:, None], r[None, :])[:, :, None, None]
    rows = {
        "clamped cell": agreement(spectrum(doped, fc["fc_clamped"]) - base, truth),
        "clamped less ε·dΦ/dε": agreement(spectrum(doped, fc["fc_pristine"] + local) - base, truth),
    }
    for radius in cfg.radii:
        kept = fc["fc_pristine"] + local * (closer < radius)
        rows[f"… within {radius:g} Å"] = agreement(spectrum(doped, kept, True) - base, truth)
    rows["mass alone"] = agreement(spectrum(doped, fc["fc_pristine"]) - base, truth)
    expansion = (abs(np.linalg.det(fc["free_cell"])) / abs(np.linalg.det(fc["cell"]))) ** (1 / 3)
    return rows, eps, expansion - 1


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/uniform_strain")
def main(cfg: DictConfig) -> None:
    ff = instantiate(cfg.calculator)
    grid = EnergyGrid(cfg.spectra.e_min, cfg.spectra.e_max, cfg.spectra.n_points)
    table = None
    for host_cfg in cfg.hosts:
        rows, eps, expansion = host_rows(
            cfg, force_constants(cfg, ff, host_cfg, Path(cfg.store)), grid
        )
        if table is None:
            table = [
                "| host:dopant | clamped ε | free cell's expansion | " + " | ".join(rows) + " |",
                "|---|---|---|" + "---|" * len(rows),
            ]
        table.append(
            f"| {Path(host_cfg.structure).stem}:{host_cfg.dopant} | {eps:.2e} | {expansion:.2e} | "
            + " | ".join(f"{a['cosine']:.3f} / {a['norm_ratio']:.2f}" for a in rows.values())
            + " |"
        )
        print(table[-1], flush=True)
    text = "\n".join(table)
    print(text)
    if cfg.docs:
        overrides = " ".join(HydraConfig.get().overrides.task)
        path = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "uniform_strain.md"
        write_text_atomic(
            path,
            "# A clamped cell's uniform strain, and one dopant's signal without it\n\n"
            f"`python scripts/bench_uniform_strain.py {overrides}` — "
            f"{datetime.date.today().isoformat()}, {platform.machine()} CPU, default potential. "
            f"One substitution in {cfg.size} atoms; every column is cosine / norm ratio of a "
            "difference spectrum (doped − pristine) against that of the cell relaxed at zero "
            "pressure (positions and cell). ε: the clamped cell's uniform strain (from its "
            "pressure); expansion: the free cell's, per length.\n\n" + text + "\n",
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
