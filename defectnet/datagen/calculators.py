"""Machine-learning interatomic potentials behind one small interface.

A ``ForceField`` gives an ASE calculator (for relaxation) and a ``forces`` method over a list of
structures (for the many displaced cells of a phonon calculation), so the batching strategy of
each potential lives with that potential. Importing a potential is deferred to construction:
``mace`` must be imported before ``e3nn`` and is heavy, and neither is needed for other runs.

The default is matgl's TensorNet-MatPES-r2SCAN: its phonons are close to measured ones (Si Γ
optical 59 meV against 64 measured, GaAs 33.3 against 33.3; CHGNet gives 50–56 and 8–9), and
``scripts/bench_fidelity.py`` ranks the potentials against reference phonon DOS curves. Its model
folder ships inside the package, so the default runs offline.
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


MATGL_SHIPPED = Path(__file__).resolve().parent.parent / "potentials" / "matgl"


def matgl_model_folder(model: str) -> Path:
    """The local folder of a matgl model: ``model`` is a folder, or the name of one that ships
    with DefectNet. Never a download: matgl would fetch a bare name from its hub."""
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        return path
    shipped = MATGL_SHIPPED / model
    if "/" not in model and shipped.is_dir():
        return shipped
    names = sorted(p.name for p in MATGL_SHIPPED.iterdir() if p.is_dir())
    raise FileNotFoundError(
        f"calculator.model: '{model}' is neither a model folder nor a matgl model shipped with "
        f"DefectNet ({', '.join(names)}). DefectNet never downloads at run time: on a machine "
        f"with network run python -c \"import matgl; matgl.load_model('{path.name}')\", copy "
        "the model folder (model.json, model.pt, state.pt) here, and pass "
        "calculator.model=/path/to/folder."
    )


class MatGLForceField(ForceField):
    """A matgl potential (TensorNet, M3GNet, CHGNet of matgl) from a local model folder.

    Stress in eV/Å³ (ASE's unit), so cell relaxation works; matgl's calculator defaults to GPa.
    """

    name = "matgl"

    def __init__(self, model: str = "TensorNet-MatPES-r2SCAN-v2025.1-PES", device: str = "cpu"):
        import warnings

        import matgl

        self.folder = matgl_model_folder(model)
        self.device = device
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="Incompatible model version")
            try:
                self.potential = matgl.load_model(self.folder).to(device)
            except RuntimeError as exc:
                if not isinstance(exc.__cause__, UserWarning):
                    raise
                raise RuntimeError(
                    f"calculator.model: matgl {package_version('matgl')} would evaluate "
                    f"'{self.folder.name}' with a newer network than the one it was saved from, "
                    "and gets its phonons wrong (NaCl relaxes 17 % too large); install the "
                    "matgl release DefectNet pins: pip install 'matgl==2.1.2'."
                ) from None
        self._calc = None

    @property
    def version(self) -> str:
        return f"matgl {package_version('matgl')}, model {self.folder.name}"

    def calculator(self) -> Calculator:
        if self._calc is None:
            from matgl.ext.ase import PESCalculator

            self._calc = PESCalculator(self.potential, stress_unit="eV/A3")
        return self._calc


class SevenNetForceField(ForceField):
    """SevenNet (``pip install 'defectnet[sevenn]'``); SevenNet-0's weights ship in its wheel.

    sevenn < 0.11 runs on the e3nn that mace-torch pins; ``mace`` is imported first for it.
    """

    name = "sevenn"

    def __init__(self, model: str = "7net-0", device: str = "cpu"):
        import mace  # noqa: F401  (mace must be imported before e3nn)
        from sevenn.calculator import SevenNetCalculator

        self.model = model
        self._calc = SevenNetCalculator(model=model, device=device)

    @property
    def version(self) -> str:
        return f"sevenn {package_version('sevenn')}, model {self.model}"

    def calculator(self) -> Calculator:
        return self._calc
