"""Parents from NCrystal's standard library: the crystals whose reference phonon DOS
(``datagen.reference_dos``) the fidelity benchmark compares with."""

from __future__ import annotations

from defectnet.datagen.parents.base import Parent, ParentSource
from defectnet.datagen.reference_dos import ReferenceDOS, crystal_of, reference_of
from defectnet.elements import DOPANTS
from defectnet.errors import UserError


class NCrystalParents(ParentSource):
    """The crystalline NCrystal standard-library materials that the pipeline can simulate:
    every element in the vocabulary (natural isotopic mix: no deuterides), at most
    ``max_atoms`` atoms in the cell, a VDOS curve for every element. Parent id: the file name
    without ``.ncmat``."""

    def __init__(self, max_atoms: int = 40, files: list[str] | None = None):
        self.max_atoms = int(max_atoms)
        self.files = list(files) if files else None

    def _entries(self) -> list[str]:
        import NCrystal

        names = sorted(f.name for f in NCrystal.browseFiles(factory="stdlib"))
        if self.files is None:
            return names
        wanted = [f if f.endswith(".ncmat") else f"{f}.ncmat" for f in self.files]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise UserError(
                f"parents.files: {unknown} are not in NCrystal's standard library; list them "
                'with python -c "import NCrystal; NCrystal.browseFiles(dump=True)".'
            )
        return wanted

    @staticmethod
    def _info(name: str):
        import NCrystal

        return NCrystal.createInfo(f"stdlib::{name}")

    def usable(self, info) -> bool:
        if not (info.isCrystalline() and info.hasStructureInfo() and info.hasAtomInfo()):
            return False
        if info.structure_info["n_atoms"] > self.max_atoms:
            return False
        atoms = [ai.atomData for ai in info.atominfos]
        if not all(a.isNaturalElement() and a.elementName() in DOPANTS for a in atoms):
            return False
        return all(type(d).__name__ == "DI_VDOS" for d in info.dyninfos)

    def parents(self) -> list[Parent]:
        out = []
        for name in self._entries():
            info = self._info(name)
            if not self.usable(info):
                if self.files is not None:
                    raise UserError(
                        f"parents.files: {name} is not usable here (amorphous, over "
                        f"{self.max_atoms} atoms, isotopes or elements beyond the vocabulary, "
                        "or an element without a VDOS curve)."
                    )
                continue
            atoms = crystal_of(info)
            out.append(
                Parent(
                    id=name.removesuffix(".ncmat"),
                    formula=atoms.get_chemical_formula(mode="metal", empirical=True),
                    prototype=f"sg{info.structure_info['spacegroup']}",
                    atoms=atoms,
                )
            )
        return out

    def reference(self, parent_id: str) -> ReferenceDOS:
        return reference_of(self._info(f"{parent_id}.ncmat"))
