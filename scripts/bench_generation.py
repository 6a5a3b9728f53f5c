"""Benchmark of the reference generation path on this machine; prints figures, asserts none.

1. Si pristine PDoS: the optical peak (meV) for each calculator whose model is available.
2. Wall time per doped Si sample (one Ge + one C) at the configured sizes: relaxation and
   finite-displacement phonons. Above ``full_up_to`` atoms the phonon time is projected from
   ``sample_calls`` timed force calls × the number of displacements (marked "projected").
"""

from __future__ import annotations

import time

import hydra
import numpy as np
from ase.build import bulk
from hydra.utils import instantiate
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR, calculator_config
from defectnet.datagen.phonons import (
    FiniteDisplacement,
    from_phonopy_atoms,
    mesh_modes,
    own_cell_phonopy,
)
from defectnet.datagen.relax import relax
from defectnet.datagen.supercell import choose_supercell
from defectnet.spectra import THZ_TO_MEV, EnergyGrid, broaden_modes


def si_optical_peak(ff) -> tuple[float, float, float]:
    """(Γ optical mode, top PDoS peak on a 0.25 meV grid with 1 meV FWHM, lattice constant)."""
    prim = relax(bulk("Si", "diamond", a=5.43), ff.calculator(), fmax=0.001, relax_cell=True).atoms
    matrix, _ = choose_supercell(prim, 200, 260)
    phonon = FiniteDisplacement().phonopy(prim, matrix, ff)
    phonon.run_qpoints([[0, 0, 0]])
    gamma = float(phonon.qpoints.frequencies.max() * THZ_TO_MEV)
    modes = mesh_modes(phonon, 60.0, n_displacements=len(phonon.displacements))
    grid = EnergyGrid(0, 80, 321)
    dos = broaden_modes(modes.energies_mev, grid, 1.0, modes.weights)
    upper = grid.energies > 0.7 * gamma
    peak = float(grid.energies[upper][np.argmax(dos[upper])])
    return gamma, peak, float(prim.cell.lengths()[0] * np.sqrt(2))


def doped_sample_time(ff, n_atoms: int, cfg: DictConfig) -> dict:
    prim = bulk("Si", "diamond", a=5.46)
    _, cell = choose_supercell(prim, int(n_atoms * 0.9), int(n_atoms * 1.1))
    cell[0].symbol, cell[len(cell) // 2].symbol = "Ge", "C"
    t0 = time.perf_counter()
    relaxed = relax(cell, ff.calculator(), fmax=cfg.relax.fmax, steps=cfg.relax.steps)
    t_relax = time.perf_counter() - t0
    method: FiniteDisplacement = instantiate(cfg.phonons)
    phonon = own_cell_phonopy(relaxed.atoms, method.symprec)
    phonon.generate_displacements(distance=method.displacement, is_plusminus=method.plusminus)
    n_disp = len(phonon.supercells_with_displacements)
    t1 = time.perf_counter()
    if len(cell) <= cfg.full_up_to:
        method.modes(relaxed.atoms, np.eye(3, dtype=int), ff)
        t_phon, how = time.perf_counter() - t1, "measured"
    else:
        cells = [
            from_phonopy_atoms(c) for c in phonon.supercells_with_displacements[: cfg.sample_calls]
        ]
        ff.forces(cells)
        per_call = (time.perf_counter() - t1) / len(cells)
        t_phon, how = per_call * n_disp, f"projected from {len(cells)} calls"
    return {
        "atoms": len(cell),
        "relax_steps": relaxed.steps,
        "relax_s": t_relax,
        "displacements": n_disp,
        "phonons_s": t_phon,
        "how": how,
    }


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/generation")
def main(cfg: DictConfig) -> None:
    print("Si pristine PDoS, optical peak:")
    for name in cfg.calculators:
        try:
            calc = calculator_config(name)
            if name == "mace_mp":
                calc.model_path = cfg.mace_model_path
            ff = instantiate(calc)
        except (FileNotFoundError, ImportError) as exc:
            print(f"  {name:8s} not available here: {str(exc).splitlines()[0][:110]}…")
            continue
        gamma, peak, a = si_optical_peak(ff)
        print(
            f"  {name:8s} a = {a:.3f} Å   optical Γ = {gamma:.1f} meV   "
            f"PDoS top peak = {peak:.1f} meV   (measured Si: ≈ 63–64 meV)"
        )
    ff = instantiate(cfg.calculator)
    print(f"\nDoped Si (1 Ge + 1 C), full finite displacements, {ff.describe()['version']}:")
    print(
        f"  {'atoms':>6} {'relax steps':>11} {'relax s':>8} {'displacements':>13} "
        f"{'phonons s':>10} {'total min':>9}  how"
    )
    for n in cfg.sizes:
        r = doped_sample_time(ff, n, cfg)
        total = (r["relax_s"] + r["phonons_s"]) / 60
        print(
            f"  {r['atoms']:>6} {r['relax_steps']:>11} {r['relax_s']:>8.1f} "
            f"{r['displacements']:>13} {r['phonons_s']:>10.1f} {total:>9.2f}  {r['how']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
