"""Deep ensembles: find and load the member checkpoints, run every member, combine their answers
into a mean, a spread and intervals."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from defectnet.data.datamodule import PDoSDataModule, open_set_mask
from defectnet.model.checkpoint import CheckpointError, Thresholds, load_network
from defectnet.model.pretrained import MEMBER_GLOB, pretrained_members
from defectnet.spectra import EnergyGrid


@dataclass
class EnsemblePrediction:
    """Concentrations of every vocabulary element: mean, spread and each member's answer."""

    mean: np.ndarray  # [B, 56]
    std: np.ndarray  # [B, 56]; 0 for a single member
    members: np.ndarray  # [M, B, 56]
    attention: np.ndarray | None  # [B, L], averaged over members (None: not kept)

    @classmethod
    def from_members(cls, members: np.ndarray, attention: np.ndarray | None = None):
        """Mean and spread (sample standard deviation; 0 for one member) of [M, B, 56]."""
        std = members.std(0, ddof=1) if len(members) > 1 else np.zeros_like(members[0])
        return cls(members.mean(0), std, members, attention)

    def presence(self, spread_weight: float) -> np.ndarray:
        """What presence is called on: the mean less ``spread_weight`` member spreads, so a
        dopant that only some members see is not called (one network: its own answer). On
        unseen hosts members that disagree are no evidence: at the same distractor
        false-positive rate this finds more of the present dopants than the mean does."""
        return self.mean - spread_weight * self.std

    def interval(
        self, level: float, scale: float = 1.0, floor: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Central interval of probability ``level`` from a normal fit to the member spread
        plus ``floor``, widened by ``scale`` (a deep ensemble's spread understates its error;
        the evaluation measures by how much on the validation split). The floor keeps an
        interval around a dopant every member answers alike, e.g. all at zero, which a spread
        alone would make a point."""
        half = normal_quantile(level) * scale * (self.std + floor)
        return np.clip(self.mean - half, 0, None), self.mean + half

    def interval_scale(
        self, target: np.ndarray, mask: np.ndarray, level: float, floor: float = 0.0
    ) -> float:
        """The smallest widening that puts ``level`` of the present dopants' true
        concentrations inside the interval with ``floor`` (to be chosen on a validation
        split)."""
        present = (mask > 0) & (target > 0)
        if not present.any():
            return 1.0
        ratio = np.abs(target - self.mean)[present] / (
            normal_quantile(level) * np.maximum(self.std[present] + floor, 1e-12)
        )
        return float(max(np.quantile(ratio, level), 1e-6))


def normal_quantile(level: float) -> float:
    """z such that a normal variable lies within ±z standard deviations with probability
    ``level``."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


@torch.no_grad()
def ensemble_predict(
    networks, spectra: torch.Tensor, mask: torch.Tensor, references: torch.Tensor | None = None
) -> EnsemblePrediction:
    outputs = [net(spectra, mask, references) for net in networks]
    members = torch.stack([c for c, _ in outputs]).numpy()
    attention = torch.stack([a for _, a in outputs]).mean(0).numpy()
    return EnsemblePrediction.from_members(members, attention)


def checkpoint_paths(spec) -> list[Path]:
    """A checkpoint, a list of them, a glob, or a folder (every ``best*.ckpt`` below it, else
    every ``last.ckpt``, else the ``member-*.ckpt`` of a shipped model): the members of an
    ensemble, sorted. ``None``: the pretrained model that ships with DefectNet."""
    if spec is None:
        return pretrained_members()
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    paths: list[Path] = []
    for item in items:
        found = []
        for p in map(Path, sorted(glob.glob(str(Path(str(item)).expanduser())))):
            if p.is_dir():
                found += (
                    sorted(p.rglob("best*.ckpt"))
                    or sorted(p.rglob("last.ckpt"))
                    or sorted(p.glob(MEMBER_GLOB))
                )
            else:
                found.append(p)
        if not found:
            raise CheckpointError(
                f"ckpt_path: '{item}' matches no checkpoint file; pass a .ckpt, a glob or a "
                "training run (or multirun) folder."
            )
        paths += found
    return paths


def load_ensemble(spec) -> tuple[list[torch.nn.Module], EnergyGrid, Thresholds, list[Path]]:
    """Networks of every member (they must share one energy grid) and the members' mean
    presence thresholds."""
    paths = checkpoint_paths(spec)
    loaded = [load_network(p) for p in paths]
    grids = {g for _, g, _ in loaded}
    if len(grids) > 1:
        raise CheckpointError(
            f"ckpt_path: the checkpoints were trained on different energy grids "
            f"{sorted(map(str, grids))}; an ensemble needs one grid."
        )
    thresholds = Thresholds(
        float(np.mean([t.guided for *_, t in loaded])),
        float(np.mean([t.open_set for *_, t in loaded])),
    )
    return [n for n, _, _ in loaded], loaded[0][1], thresholds, paths


@torch.no_grad()
def network_members(networks, dm: PDoSDataModule, split: str, open_set: bool = False):
    """[M, N, 56] predictions of every network, with the given or the open-set candidates."""
    batch = dm.split_tensors(split)
    mask = open_set_mask(batch.composition) if open_set else batch.candidates
    x = batch.inputs()
    refs = batch.references
    return np.stack([net(x, mask, refs)[0].numpy() for net in networks]), mask.numpy()
