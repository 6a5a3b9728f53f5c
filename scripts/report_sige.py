"""Disorder of the melt-quenched Si hosts and what it does to the optical band (≈ 50–60 meV).

For every host of a SiGe data set: its thermal history, the fraction of atoms that are not
four-fold coordinated, and the position (tallest bin, centroid) and width of the optical band
of its pristine spectrum in meV, sorted from the most ordered host to the least.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report_sige")
def main(cfg: DictConfig) -> None:
    import numpy as np

    from defectnet.datagen.context import atoms_from_dict
    from defectnet.datagen.parents.melt_quench import coordination_defects
    from defectnet.spectra import EnergyGrid, optical_feature

    folder = Path(cfg.out_dir) / "parents"
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no prepared hosts; run generate=sige stage=parents.")
    energies = EnergyGrid().energies
    rows = []
    for f in files:
        state = json.loads(f.read_text())
        if state.get("status") != "ok":
            rows.append((np.inf, state["id"], f"{state['status']}: {state.get('reason')}"))
            continue
        atoms = atoms_from_dict(state["structure"])
        defects = coordination_defects(atoms, float(cfg.coordination_cutoff))
        band = optical_feature(state["pristine"], energies, float(cfg.optical_above_mev))
        rows.append(
            (
                defects,
                state["id"],
                f"{100 * defects:5.1f} % | {band['peak_mev']:5.1f} | "
                f"{1000 * band['height']:4.0f} | {band['centroid_mev']:5.1f} | "
                f"{band['fwhm_mev']:5.1f} | "
                f"{atoms.get_volume() / len(atoms):5.2f}",
            )
        )
    print(
        "| host | not 4-fold | optical peak (meV) | height (1e-3/meV) | centroid (meV) | "
        "FWHM (meV) | Å³/atom |"
    )
    print("|---|---|---|---|---|---|---|")
    for _, host, text in sorted(rows, key=lambda r: (r[0], r[1])):
        print(f"| {host} | {text} |")


if __name__ == "__main__":
    main()
