"""Write the realism benchmark's host crystals to ``data/realism/structures/`` (CIF).

Real crystals that are not pretraining parents, binary to quaternary, eight prototypes, each
with its measured lattice constants: well-known semiconductors built with ASE from their
room-temperature lattice constants, and insulators taken from NCrystal's standard library
(whose structures are measured ones). ``generate=realism`` reads the folder as
``parents=files``; rerunning this script rewrites the same files.

    python scripts/make_realism_structures.py [out=data/realism/structures]
"""

from __future__ import annotations

import sys
from pathlib import Path

from ase import Atoms
from ase.build import bulk
from ase.io import write
from ase.spacegroup import crystal

# Room-temperature lattice constants (Å) and internal coordinates of the semiconductors.
SEMICONDUCTORS = {
    "zincblende-GaAs": lambda: bulk("GaAs", "zincblende", a=5.6533),
    "zincblende-InAs": lambda: bulk("InAs", "zincblende", a=6.0583),
    "zincblende-ZnSe": lambda: bulk("ZnSe", "zincblende", a=5.6676),
    "zincblende-AlP": lambda: bulk("AlP", "zincblende", a=5.4635),
    "chalcopyrite-CuInSe2": lambda: crystal(
        ["Cu", "In", "Se"],
        basis=[(0, 0, 0), (0, 0, 0.5), (0.2242, 0.25, 0.125)],
        spacegroup=122,
        cellpar=[5.782, 5.782, 11.619, 90, 90, 90],
        primitive_cell=True,
    ),
    "kesterite-Cu2ZnSnS4": lambda: crystal(
        ["Cu", "Cu", "Zn", "Sn", "S"],
        basis=[(0, 0, 0), (0, 0.5, 0.25), (0, 0.5, 0.75), (0, 0, 0.5), (0.7560, 0.7566, 0.8722)],
        spacegroup=82,
        cellpar=[5.427, 5.427, 10.871, 90, 90, 90],
        primitive_cell=True,
    ),
}

# NCrystal standard-library entries (measured structures), by the id the benchmark gives them.
NCRYSTAL = {
    "wurtzite-ZnO": "ZnO_sg186_ZincOxide",
    "wurtzite-BeO": "BeO_sg186",
    "rocksalt-NaCl": "NaCl_sg225_SodiumChloride",
    "rocksalt-CaO": "CaO_sg225_CalciumOxide",
    "rutile-TiO2": "TiO2_sg136_Rutile",
    "rutile-MgF2": "MgF2_sg136_MagnesiumFlouride",
    "quartz-SiO2": "SiO2-alpha_sg154_AlphaQuartz",
}


def ncrystal_structure(entry: str) -> Atoms:
    import NCrystal

    from defectnet.datagen.reference_dos import crystal_of

    return crystal_of(NCrystal.createInfo(f"stdlib::{entry}.ncmat"))


def main(argv: list[str]) -> None:
    out = Path(dict(a.split("=", 1) for a in argv).get("out", "data/realism/structures"))
    out.mkdir(parents=True, exist_ok=True)
    hosts = {name: build() for name, build in SEMICONDUCTORS.items()}
    hosts |= {name: ncrystal_structure(entry) for name, entry in NCRYSTAL.items()}
    for name, atoms in hosts.items():
        write(out / f"{name}.cif", atoms)
        print(f"{name:24s} {atoms.get_chemical_formula():12s} {len(atoms):3d} atoms -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
