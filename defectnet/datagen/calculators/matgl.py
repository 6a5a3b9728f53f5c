"""matgl potentials (``calculator=matgl``, the default), from local model folders."""

from __future__ import annotations

import logging
import os
import time
from importlib.metadata import version as package_version
from pathlib import Path

from ase.calculators.calculator import Calculator

from defectnet.datagen.calculators import ForceField

log = logging.getLogger(__name__)

MATGL_SHIPPED = Path(__file__).resolve().parents[2] / "potentials" / "matgl"


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

    def compile(self) -> None:
        """torch.compile the network: 10–40 s once per process and a few seconds the first time
        a cell of a new size comes, then a 216-atom force call takes 0.39 s instead of 0.89 on
        one idle CPU core (0.8 against 1.7 on a loaded one). Tried on a small cell first: where
        compiling fails (no C++ compiler, say) the network runs eager, with a warning. The
        potential differentiates its energy keeping the graph, which compiled backward passes
        allow only without donated buffers."""
        import torch
        import torch._functorch.config
        from ase.build import bulk

        torch._functorch.config.donated_buffer = False
        eager = self.potential.model
        self.potential.model = torch.compile(eager, dynamic=True)
        start = time.perf_counter()
        try:
            self.forces([bulk("GaAs", "zincblende", a=5.65, cubic=True)])
            log.info("calculator matgl: compiled in %.0f s", time.perf_counter() - start)
        except Exception as exc:
            log.warning(
                "compile_potential: torch.compile failed (%s: %s); running eager",
                type(exc).__name__,
                exc,
            )
            self.potential.model = eager

    @property
    def version(self) -> str:
        return f"matgl {package_version('matgl')}, model {self.folder.name}"

    def calculator(self) -> Calculator:
        if self._calc is None:
            from matgl.ext.ase import PESCalculator

            self._calc = PESCalculator(self.potential, stress_unit="eV/A3")
        return self._calc
