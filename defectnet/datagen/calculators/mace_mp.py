"""MACE-MP-0 or any MACE model file (``calculator=mace_mp``), from a local file."""

from __future__ import annotations

import os
from importlib.metadata import version as package_version
from pathlib import Path

from ase.calculators.calculator import Calculator

from defectnet.datagen.calculators import ForceField


def default_mace_mp_path() -> Path:
    """Where mace-torch caches the MACE-MP-0 medium model once downloaded."""
    from mace.calculators.foundations_models import get_cache_dir

    return Path(get_cache_dir()) / "20231203mace128L1_epoch199model"


class MACEForceField(ForceField):
    """MACE-MP-0 (or any MACE model file) through mace-torch's ``mace_mp``, from a local file.

    Nothing is downloaded: ``model_path`` (or, when empty, mace's own cache) must hold the file.
    """

    name = "mace_mp"

    def __init__(
        self, model_path: str | None = None, device: str = "cpu", default_dtype: str = "float64"
    ):
        path = Path(os.path.expanduser(model_path)) if model_path else default_mace_mp_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"calculator.model_path: no MACE model file at '{path}'. DefectNet never "
                "downloads at run time. Download the MACE-MP-0 model "
                "(2023-12-03-mace-128-L1_epoch-199.model, from the ACEsuit/mace-foundations "
                "releases) on a machine with network, copy it here, and pass "
                "calculator.model_path=/path/to/file.model."
            )
        import mace  # noqa: F401  (mace must be imported before e3nn)
        from mace.calculators import mace_mp

        self.path = path
        self._calc = mace_mp(model=str(path), device=device, default_dtype=default_dtype)

    @property
    def version(self) -> str:
        return f"mace-torch {package_version('mace-torch')}, model {self.path.name}"

    def calculator(self) -> Calculator:
        return self._calc
