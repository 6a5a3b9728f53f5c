"""Parents from the Materials Project (optional extra ``mp``; needs an API key and network)."""

from __future__ import annotations

from collections.abc import Sequence

from defectnet.datagen.parents.base import Parent, ParentSource


class MaterialsProjectParents(ParentSource):
    """Semiconductors from the Materials Project through ``mp-api`` (needs a key and network)."""

    def __init__(
        self,
        api_key: str | None = None,
        band_gap: Sequence[float] = (0.1, 6.0),
        num_elements: Sequence[int] = (2, 5),
        max_sites: int = 20,
        limit: int = 2000,
    ):
        self.api_key, self.band_gap, self.num_elements = api_key, band_gap, num_elements
        self.max_sites, self.limit = max_sites, limit

    def parents(self) -> list[Parent]:
        try:
            from mp_api.client import MPRester
        except ImportError as exc:
            raise ImportError(
                "parents=materials_project needs the optional extra: pip install 'defectnet[mp]'."
            ) from exc
        from pymatgen.io.ase import AseAtomsAdaptor

        with MPRester(self.api_key) as mpr:
            docs = mpr.materials.summary.search(
                band_gap=tuple(self.band_gap),
                num_elements=tuple(self.num_elements),
                num_sites=(1, self.max_sites),
                is_stable=True,
                fields=["material_id", "formula_pretty", "structure"],
            )
        docs = sorted(docs, key=lambda d: str(d.material_id))[: self.limit]
        return [
            Parent(
                str(d.material_id),
                d.formula_pretty,
                "materials_project",
                AseAtomsAdaptor.get_atoms(d.structure),
            )
            for d in docs
        ]
