"""What a checkpoint must carry to be used for prediction, and its safe loading.

Every checkpoint a training run writes holds, beside the weights, a ``defectnet`` entry: the
format version, the network as a ``_target_`` config (its class path and constructor
arguments, so a new network needs no registration), the energy grid of the data
it was trained on and the presence thresholds (given candidates, open set; chosen on the
validation split for the weights saved, by ``model.thresholds.PresenceThresholds``).
``load_network`` rebuilds the network from that entry alone (``torch.load(weights_only=True)``:
nothing is unpickled), so prediction needs no training config.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from defectnet.errors import UserError
from defectnet.spectra import EnergyGrid

CHECKPOINT_FORMAT = "3"
# format 2 lacks the spectrum recipe (``recipe``); it is read, and the recipe taken from the
# model's card or the prediction config
READABLE_FORMATS = ("2", CHECKPOINT_FORMAT)
# A checkpoint names the class to build; only DefectNet's own networks are built from a file.
NETWORK_PACKAGE = "defectnet.model."


class CheckpointError(UserError):
    """A checkpoint that cannot be used for prediction as it is."""


@dataclass(frozen=True)
class Thresholds:
    """Predicted concentration above which an element counts as present: with the candidates
    given, and in the open set (every non-host element offered), where more are offered and
    the model spreads a little weight over many of them."""

    guided: float
    open_set: float


def checkpoint_entry(
    network: nn.Module,
    grid: EnergyGrid | None,
    thresholds: Thresholds,
    data: dict | None = None,
    recipe: dict | None = None,
) -> dict:
    """The ``defectnet`` entry written into every checkpoint; ``data`` names the data set and
    its held-out parents, so an evaluation can tell whether a checkpoint saw its test parents;
    ``recipe`` says how its training spectra were made (``spectrum_recipe``)."""
    return {
        "format_version": CHECKPOINT_FORMAT,
        "network": {
            "_target_": f"{type(network).__module__}.{type(network).__qualname__}",
            **network.config,
        },
        "grid": grid.as_dict() if grid is not None else None,
        "threshold": float(thresholds.guided),
        "open_set_threshold": float(thresholds.open_set),
        "data": data or {},
        "recipe": recipe,
    }


def spectrum_recipe(grid: EnergyGrid, meta: dict) -> dict:
    """How a data set's spectra were made, from its cache's metadata: grid, resolution,
    weighting, potential and phonon method (what prediction checks a spectrum against and
    simulates a structure with)."""
    spectra = meta.get("spectra", {})
    return {
        "grid": grid.as_dict(),
        "fwhm_mev": spectra.get("fwhm_mev"),
        "weighting": spectra.get("weighting"),
        "calculator": meta.get("calculator"),
        "phonons": meta.get("phonons"),
    }


def entry_thresholds(entry: dict) -> Thresholds:
    return Thresholds(
        float(entry["threshold"]), float(entry.get("open_set_threshold", entry["threshold"]))
    )


def checkpoint_data(path: str | Path) -> dict:
    """The data description a checkpoint was trained with (empty when unknown)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    return ckpt.get("defectnet", {}).get("data", {})


def build_network(config: dict, where: str | Path) -> nn.Module:
    """The network of a ``_target_`` config from a checkpoint; only classes of
    ``defectnet.model`` are imported, so a checkpoint file cannot name arbitrary code."""
    from hydra.utils import get_class

    target = str(config.get("_target_", ""))
    if not target.startswith(NETWORK_PACKAGE):
        raise CheckpointError(
            f"{where}: network '{target}' is not one of DefectNet's networks "
            f"({NETWORK_PACKAGE}*); this checkpoint was not written by DefectNet's training."
        )
    try:
        cls = get_class(target)
    except Exception as exc:  # missing module or class: Hydra raises ImportError variants
        raise CheckpointError(
            f"{where}: network '{target}' does not exist in this DefectNet version ({exc})."
        ) from None
    arguments = {k: v for k, v in config.items() if k != "_target_"}
    unknown = sorted(set(arguments) - set(inspect.signature(cls).parameters))
    if unknown:
        raise CheckpointError(
            f"{where}: the network was saved with settings this DefectNet version does not have "
            f"({', '.join(unknown)}); load it with the version that trained it, or retrain."
        )
    return cls(**arguments)


def read_checkpoint(path: str | Path, setting: str = "ckpt_path") -> dict:
    """A checkpoint file's contents, loaded safely (tensors and plain data only); a missing,
    truncated or unsafe file is one ``CheckpointError`` naming the setting and the fix."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{setting}={path}: no such checkpoint file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # not a pickle of code: garbage
            raise CheckpointError(
                f"{setting}={path}: not a loadable checkpoint ({' '.join(str(exc).split())[:80]}); "
                "pass the .ckpt a training run wrote under outputs/.../checkpoints/."
            ) from exc
        raise CheckpointError(
            f"{setting}={path}: holds Python objects beyond tensors and plain data, so it is "
            "refused unread (loading it could run code); pass a checkpoint DefectNet wrote."
        ) from exc
    except Exception as exc:  # torch raises many types for truncated or foreign files
        reason = " ".join(str(exc).split())[:120]
        raise CheckpointError(
            f"{setting}={path}: not a loadable checkpoint, truncated or not one "
            f"({type(exc).__name__}: {reason}); pass the .ckpt a training run wrote under "
            "outputs/.../checkpoints/."
        ) from exc


def read_recipe(path: str | Path) -> dict | None:
    """The spectrum recipe a checkpoint records (None before format 3)."""
    entry = read_checkpoint(path).get("defectnet", {})
    return entry.get("recipe")


def load_network(path: str | Path) -> tuple[nn.Module, EnergyGrid, Thresholds]:
    """The trained network (eval mode, CPU), its energy grid and its presence thresholds."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    entry = ckpt.get("defectnet") if isinstance(ckpt, dict) else None
    if entry is None or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path}: no 'defectnet' entry; it was not written by this version's training "
            "(or not by DefectNet at all). Retrain with python train.py to get one."
        )
    if entry.get("format_version") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: checkpoint format {entry.get('format_version')!r}, this DefectNet reads "
            f"{CHECKPOINT_FORMAT!r}; retrain, or predict with the DefectNet version that wrote it."
        )
    if entry.get("grid") is None:
        raise CheckpointError(f"{path}: the checkpoint does not record its energy grid; retrain.")
    grid = EnergyGrid(**{k: v for k, v in entry["grid"].items() if k != "unit"})
    network = build_network(entry["network"], path)
    if network.config["n_points"] != grid.n_points:
        raise CheckpointError(
            f"{path}: the network takes {network.config['n_points']} energy points but was "
            f"trained on a {grid.n_points}-point grid; the checkpoint is inconsistent."
        )
    weights = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    network.load_state_dict(weights)
    return network.eval(), grid, entry_thresholds(entry)


def network_from_checkpoint(path: str | Path) -> nn.Module:
    """A trained network to go on training (fine-tuning): class, shape and weights from the
    checkpoint, whatever ``model.model`` says. Used as ``model.model._target_`` (``init_from=``
    sets it), so fine-tuning is a model built from a checkpoint, not a special training path."""
    return load_network(path)[0].train()
