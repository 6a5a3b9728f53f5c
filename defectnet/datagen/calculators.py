"""Machine-learning interatomic potentials behind one small interface.

A ``ForceField`` gives an ASE calculator (for relaxation) and a ``forces`` method over a list of
structures (for the many displaced cells of a phonon calculation), so the batching strategy of
each potential lives with that potential. Importing a potential is deferred to construction:
``mace`` must be imported before ``e3nn`` and is heavy, and neither is needed for CHGNet runs.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator


class ForceField(ABC):
    """An interatomic potential: a name and version for provenance, a calculator, forces."""

    name: str

    @property
    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def calculator(self) -> Calculator: ...

    def forces(self, structures: list[Atoms]) -> list[np.ndarray]:
        """Forces (eV/Å) for each structure; the default evaluates one at a time."""
        calc = self.calculator()
        out = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calc
            out.append(np.asarray(atoms.get_forces(), dtype=np.float64))
        return out

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version}


class CHGNetForceField(ForceField):
    """CHGNet with the weights that ship in its wheel: the offline default.

    Forces for displaced cells go through ``predict_structure(task="ef")``, which skips the
    stress and is about twice as fast on CPU as the ASE calculator; ``batch_size`` > 1 only pays
    on a GPU.
    """

    name = "chgnet"

    def __init__(self, device: str = "cpu", batch_size: int = 1, model_version: str | None = None):
        from chgnet.model import CHGNet

        self.device = device
        self.batch_size = batch_size
        self.model = CHGNet.load(
            model_name=model_version or "0.3.0", use_device=device, verbose=False
        )
        self._calc = None

    @property
    def version(self) -> str:
        return f"chgnet {package_version('chgnet')}, weights {self.model.version}"

    def calculator(self) -> Calculator:
        if self._calc is None:
            from chgnet.model.dynamics import CHGNetCalculator

            self._calc = CHGNetCalculator(model=self.model, use_device=self.device)
        return self._calc

    def forces(self, structures: list[Atoms]) -> list[np.ndarray]:
        from pymatgen.io.ase import AseAtomsAdaptor

        pmg = [AseAtomsAdaptor.get_structure(a) for a in structures]
        preds = self.model.predict_structure(pmg, task="ef", batch_size=self.batch_size)
        if isinstance(preds, dict):
            preds = [preds]
        return [np.asarray(p["f"], dtype=np.float64) for p in preds]


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
