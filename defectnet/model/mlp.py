"""The MLP baseline: the same inputs and outputs as DefectNet, no convolutions or attention.

Spectra [B, 3, 100] (scaled as DefectNet scales them) and the 56-long candidate vector are
concatenated and mapped by a multilayer perceptron to 56 non-negative concentrations, masked to
the candidates. It answers whether DefectNet's architecture earns its keep on a data set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from defectnet.elements import N_DOPANTS
from defectnet.model.defectnet import input_channels, network_config


class MLPBaseline(nn.Module):
    """Concentrations of the candidates from flattened spectra + candidate vector."""

    def __init__(
        self,
        n_points: int = 100,
        in_channels: int = 3,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.1,
        n_dopants: int = N_DOPANTS,
        difference_gain: float = 0.0,
    ):
        self.config = network_config(locals())
        super().__init__()
        self.difference_gain = difference_gain  # the same derived channel as DefectNet's
        layers: list[nn.Module] = []
        width = (in_channels + (difference_gain > 0)) * n_points + n_dopants
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_dopants))
        self.net = nn.Sequential(*layers)
        nn.init.constant_(self.net[-1].bias, -3.0)
        self.encoder = self.net[:-1]  # what model.freeze_encoder freezes

    def forward(
        self, spectra: torch.Tensor, candidates: torch.Tensor, references=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concentrations [B, 56] and, for a like-for-like interface, uniform attention [B, L]
        (spectrum only: ``references`` are not read)."""
        x = torch.cat([input_channels(spectra, self.difference_gain).flatten(1), candidates], dim=1)
        conc = F.softplus(self.net(x)) * candidates
        uniform = spectra.new_full((spectra.shape[0], spectra.shape[-1]), 1 / spectra.shape[-1])
        return conc, uniform
