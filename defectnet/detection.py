"""Each candidate's limit of detection in its host at a measurement's noise level.

A measured spectrum has counting noise (``data.datamodule.counting_noise``), and a model reading
an undoped crystal's noisy spectrum answers a little for some candidates: most of all for those
whose signature in that host is a slight reshaping of the host's own bands (Zn for Ga, I for
Te), and how much differs from host to host, so no single threshold fits every candidate. The
limit of detection is measured where it applies: the host's own pristine spectrum, read as
both spectra with independent noise at the given level ``draws`` times, offered the same
candidates. A spectrum offers tens of candidates (the open set about fifty), so each one's limit
must be passed by noise far more rarely than once in ``draws``: the limit is where the tail of
its noise scores, extrapolated (``tail_limit``), is passed with probability ``false_alarm`` /
(candidates offered), so that a noisy undoped spectrum names any candidate with probability
about ``false_alarm``. Presence is called only above both the model's threshold and the
candidate's limit. On a noiseless spectrum (level 0) there is no limit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from defectnet.data.cache import network_input
from defectnet.data.datamodule import counting_noise
from defectnet.ensemble import EnsemblePrediction

TAIL_FRACTION = 0.1  # the largest tenth of the noise scores describes their tail


def tail_limit(scores: np.ndarray, exceedance: float) -> np.ndarray:
    """[n] the score each column of ``scores`` [draws, n] passes with probability
    ``exceedance``, from an exponential tail fitted to its largest scores (peaks over a
    threshold: the excess of the top ``TAIL_FRACTION`` over the next one, or of all positive
    scores where fewer are positive); never below the largest score seen, 0 where none is
    positive."""
    draws = scores.shape[0]
    ranked = -np.sort(-scores, axis=0)
    limits = np.zeros(scores.shape[1])
    for j in range(scores.shape[1]):
        x = ranked[:, j]
        positive = int((x > 0).sum())
        if positive == 0:
            continue
        k = min(positive, max(1, math.ceil(TAIL_FRACTION * draws)))
        base = x[k] if k < positive else 0.0
        scale = float(np.mean(x[:k] - base))
        share = k / draws
        extrapolated = base + scale * math.log(share / exceedance) if share > exceedance else 0
        limits[j] = max(extrapolated, x[0])
    return limits


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
    false_alarm: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """[B, 56] the limit of detection of every offered candidate (``mask`` [B, 56]) of each host
    (``pristine`` [B, L], ``composition`` [B, L], ``references`` [B, R, L] or None) at counting
    noise ``level`` on a grid of spacing ``step``, such that the host's noisy undoped spectrum
    names any candidate with probability about ``false_alarm``; 0 where not offered or at
    level 0."""
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
        columns = np.flatnonzero(mask[b].numpy() > 0)
        per_candidate = false_alarm / max(len(columns), 1)
        limits[b, columns] = tail_limit(scores[:, columns], per_candidate)
    return limits
