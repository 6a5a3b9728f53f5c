"""Each candidate's limit of detection in its host at a measurement's noise level.

A measured spectrum has counting noise (``data.datamodule.counting_noise``), and a model reading
an undoped crystal's noisy spectrum answers a little for some candidates: most of all for those
whose signature in that host is a slight reshaping of the host's own bands (Zn for Ga, I for
Te), and how much differs from host to host, so no single threshold fits every candidate. The
limit of detection is measured where it applies: the host's own pristine spectrum, read as
both spectra with independent noise at the given level ``draws`` times, offered the same
candidates; a candidate's limit is the largest presence score it got (about its
1 − 1/(draws + 1) quantile). Presence is called only above both the model's threshold and the
candidate's limit. On a noiseless spectrum (level 0) there is no limit.
"""

from __future__ import annotations

import numpy as np
import torch

from defectnet.data.cache import network_input
from defectnet.data.datamodule import counting_noise
from defectnet.ensemble import EnsemblePrediction


@torch.no_grad()
def detection_limits(
    networks,
    pristine: torch.Tensor,
    composition: torch.Tensor,
    mask: torch.Tensor,
    references: torch.Tensor | None,
    spread_weight: float,
    level: float,
    step: float,
    draws: int = 128,
    seed: int = 0,
) -> np.ndarray:
    """[B, 56] the limit of detection of every offered candidate (``mask`` [B, 56]) of each host
    (``pristine`` [B, L], ``composition`` [B, L], ``references`` [B, R, L] or None) at counting
    noise ``level`` on a grid of spacing ``step``; 0 where not offered or at level 0."""
    limits = np.zeros(tuple(mask.shape), dtype=np.float64)
    if level <= 0:
        return limits
    generator = torch.Generator().manual_seed(seed)
    for b in range(pristine.shape[0]):
        clean = pristine[b].expand(draws, -1)
        noisy = [counting_noise(clean, level, step, generator) for _ in range(2)]
        x = network_input(noisy[0], noisy[1], composition[b].expand(draws, -1))
        offered = mask[b].expand(draws, -1)
        refs = references[b].expand(draws, -1, -1) if references is not None else None
        members = np.stack([net(x, offered, refs)[0].numpy() for net in networks])
        scores = EnsemblePrediction.from_members(members).presence(spread_weight)
        limits[b] = np.where(mask[b].numpy() > 0, scores.max(0).clip(min=0), 0.0)
    return limits
