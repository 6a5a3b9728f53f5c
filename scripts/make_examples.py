"""Write ``examples/`` from one cell of the realism set: a host outside the pretraining set,
its doped and pristine spectra from `full` phonons (two-column text, meV), the true dopants,
the host's references and its structure files, so a newcomer predicts on a spectrum the model
never saw and compares with the truth.

    python scripts/make_examples.py [sample=<parent id>/<index>] [set=realism_clamped|realism]
        [references=<folder of the realism hosts' references>]

The shipped example is a cell of ``realism_clamped`` (the realism cells as first made,
relaxed in the pristine lattice); ``set=realism`` takes one of the cells relaxed at zero
pressure. The host's references are those made as ``generate=references`` makes them, with
its alloy cell (``data/realism_references_alloy``), as the shipped reference-informed model
reads them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from ase.io import write

from defectnet.datagen.context import atoms_from_dict
from defectnet.datagen.records import read_shards
from defectnet.spectra import EnergyGrid

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = "data/realism_references_alloy/references"


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    wanted = args.get("sample", "kesterite-Cu2ZnSnS4/13")
    folder = args.get("set", "realism_clamped")
    if folder not in ("realism_clamped", "realism"):
        raise SystemExit(f"set={folder}: choose realism_clamped or realism.")
    records = {r.sample_id: r for r in read_shards(ROOT / "data" / folder / "records")}
    if wanted not in records or records[wanted].status != "ok":
        raise SystemExit(
            f"sample={wanted}: not a finished realism cell; pick one of "
            f"{sorted(k for k, r in records.items() if r.status == 'ok')}"
        )
    record = records[wanted]
    host = record.provenance.parent_id
    out = ROOT / "examples"
    out.mkdir(exist_ok=True)
    grid = EnergyGrid(**{k: v for k, v in record.spectra["grid"].items() if k != "unit"})
    for name in ("doped", "pristine"):
        np.savetxt(
            out / f"{name}.txt",
            np.c_[grid.energies, getattr(record, name)],
            header=f"{host} {name}: energy (meV), PDoS ({record.spectra['fwhm_mev']:g} meV FWHM)",
            fmt="%.6g",
        )
    write(out / "doped.extxyz", atoms_from_dict(record.structure))
    shutil.copy(ROOT / f"data/realism/structures/{host}.cif", out / "pristine.cif")
    (out / "references").mkdir(exist_ok=True)
    reference = ROOT / args.get("references", REFERENCES) / f"{host}.json"
    shutil.copy(reference, out / "references" / reference.name)
    truth = {
        "sample": wanted,
        "host": host.rsplit("-", 1)[-1],
        "n_atoms": record.n_atoms,
        "concentrations": record.concentrations,
        "offered": [c["dopant"] for c in record.candidates],
        "made_with": {
            "realism_clamped": "defectnet-generate generate=research/realism_clamped (full "
            "phonons, cell relaxed in the pristine lattice)",
            "realism": "defectnet-generate generate=realism (full phonons, cell relaxed at zero "
            "pressure)",
        }[folder],
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"examples/ from {wanted}: {truth}")


if __name__ == "__main__":
    main(sys.argv[1:])
