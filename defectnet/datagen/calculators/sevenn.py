"""SevenNet (``calculator=sevenn``), whose checkpoints ship in the ``sevenn`` wheel."""

from __future__ import annotations

from importlib.metadata import version as package_version

from ase.calculators.calculator import Calculator

from defectnet.datagen.calculators import ForceField


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
