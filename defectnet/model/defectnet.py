"""DefectNet: attention from a dopant-candidate query to spectral tokens.

Input [B, 3, 100] (pristine PDoS, doped PDoS, host composition) → a 1-D convolutional encoder →
100 spectral tokens × d_model (optionally with a fourth, derived channel: the doped-minus-pristine
difference, amplified) with a learned embedding of the energy bin. The 56-long binary
candidate vector becomes one d_model query through a linear layer (layer-normalised);
multi-head attention reads the tokens with it; a head maps the attended vector to 56
non-negative concentrations, which a hard mask sets to exactly zero outside the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from defectnet.elements import N_DOPANTS
from defectnet.errors import UserError


def network_config(arguments: dict) -> dict:
    """A network's constructor arguments as plain values (sequences as lists): what rebuilds it
    from a checkpoint (model.checkpoint). Pass ``locals()`` first thing in ``__init__``."""
    return {
        k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in arguments.items()
        if k != "self" and not k.startswith("__")
    }


class SpectralEncoder(nn.Module):
    """Stacked same-length 1-D convolutions: [B, C_in, L] → tokens [B, L, d_model]."""

    def __init__(
        self,
        in_channels: int,
        length: int,
        channels: Sequence[int],
        kernel_sizes: Sequence[int] | int,
        d_model: int,
        dropout: float,
    ):
        super().__init__()
        if isinstance(kernel_sizes, int):
            kernel_sizes = [kernel_sizes] * len(channels)
        if len(channels) != len(kernel_sizes):
            raise UserError("model.encoder: channels and kernel_sizes need the same length.")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c, k in zip(channels, kernel_sizes):
            if k % 2 == 0:
                raise UserError(
                    f"model.encoder.kernel_sizes: {k} is even; use odd kernels so "
                    "every energy bin keeps its own token."
                )
            layers += [
                nn.Conv1d(c_in, c, k, padding=k // 2),
                nn.GroupNorm(1, c),
                nn.GELU(),
                nn.Dropout(dropout),
            ]
            c_in = c
        layers.append(nn.Conv1d(c_in, d_model, 1))
        self.conv = nn.Sequential(*layers)
        self.position = nn.Parameter(torch.zeros(1, length, d_model))
        nn.init.normal_(self.position, std=0.02)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise the content, then add the bin's position: normalising the sum instead kept
        # training on a plateau at the mean concentration for hundreds of epochs
        return self.norm(self.conv(x).transpose(1, 2)) + self.position  # [B, L, d_model]


def input_channels(spectra: torch.Tensor, difference_gain: float) -> torch.Tensor:
    """A network's input: the scaled channels (``DefectNet.scale``), and with
    ``difference_gain`` > 0 the difference doped − pristine times the gain. A dilute dopant
    moves the spectrum by about its concentration, far below the host's own shape; the first
    layer could form the difference, but it starts buried under the host, which is what differs
    between parents."""
    x = DefectNet.scale(spectra)
    if difference_gain > 0:
        x = torch.cat([x, difference_gain * (x[:, 1:2] - x[:, :1])], dim=1)
    return x


def token_encoder(config: dict) -> SpectralEncoder:
    """The spectral-token encoder of an attention network, from its constructor arguments
    (``network_config``): the input channels plus the derived difference channel when
    ``difference_gain`` > 0, and the check that the attention heads split ``d_model``."""
    d_model, n_heads = config["d_model"], config["n_heads"]
    if d_model % n_heads:
        raise UserError(f"model: d_model={d_model} is not divisible by n_heads={n_heads}.")
    return SpectralEncoder(
        config["in_channels"] + (config["difference_gain"] > 0),
        config["n_points"],
        config["conv_channels"],
        config["kernel_sizes"],
        d_model,
        config["dropout"],
    )


class DefectNet(nn.Module):
    """Concentrations of the candidate dopants from pristine and doped spectra."""

    def __init__(
        self,
        n_points: int = 100,
        in_channels: int = 3,
        d_model: int = 128,
        n_heads: int = 4,
        conv_channels: Sequence[int] = (64, 128),
        kernel_sizes: Sequence[int] | int = (7, 5),
        head_hidden: int = 128,
        dropout: float = 0.1,
        n_dopants: int = N_DOPANTS,
        difference_gain: float = 0.0,
    ):
        self.config = network_config(locals())
        super().__init__()
        self.difference_gain = difference_gain
        self.encoder = token_encoder(self.config)
        # a unit-scale query makes the attention selective from the start (a bare linear map
        # of a sparse 0/1 vector gives near-uniform attention, which averages the spectrum away)
        self.query = nn.Sequential(nn.Linear(n_dopants, d_model), nn.LayerNorm(d_model))
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.head = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, head_hidden),
            nn.GELU(),
            nn.Linear(head_hidden, n_dopants),
        )
        # Start near the typical dilute concentration instead of softplus(0) ≈ 0.69.
        nn.init.constant_(self.head[-1].bias, -3.0)

    @staticmethod
    def scale(spectra: torch.Tensor) -> torch.Tensor:
        """Unit-area spectra are ~1/(energy range) high; scale both PDoS channels by the
        pristine maximum so the encoder sees O(1) values and the doped/pristine ratio is kept."""
        peak = spectra[:, :1].amax(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.cat([spectra[:, :2] / peak, spectra[:, 2:]], dim=1)

    def channels(self, spectra: torch.Tensor) -> torch.Tensor:
        return input_channels(spectra, self.difference_gain)

    def forward(
        self, spectra: torch.Tensor, candidates: torch.Tensor, references=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns concentrations [B, 56] (0 outside candidates) and attention [B, L]; reads the
        spectra only (``references`` are for ``ReferenceDefectNet``)."""
        tokens = self.encoder(self.channels(spectra))
        q = self.query(candidates).unsqueeze(1)  # [B, 1, d_model]
        attended, weights = self.attention(
            q, tokens, tokens, need_weights=True, average_attn_weights=True
        )
        conc = F.softplus(self.head(attended.squeeze(1)))
        return conc * candidates, weights.squeeze(1)
