"""Reference-informed DefectNet: each candidate asks the spectrum with its own signature in the
host.

A spectrum-only network has to learn from the training hosts how every dopant changes every
host, and on hosts it never saw it barely beats the training mean. The host's single-dopant
references (``stage=references``: per dopant a dilute cell and one or two denser ones, the
same phonon machinery as the samples) carry exactly that knowledge for the host at hand. This
network reads them:

* the sample's difference spectrum (doped − pristine) is unmixed over the candidates'
  unit-concentration reference differences at the network's ``levels`` (by default dilute and
  high-concentration; non-negative least squares, in the forward pass; a dopant's share is the
  sum of its levels');
* each candidate becomes its own query: an embedding of the element, an encoding of the shapes
  of its reference differences and per-candidate unmixing features (its NNLS share and the
  part of it on the densest signature, per level its own least-squares share, its
  cosine with the difference and the reference's size, whether it has that reference; the
  difference's size, the residual, the total share, the number of candidates);
* multi-head attention reads the spectral tokens (pristine, doped, composition and the
  amplified difference, as in ``DefectNet``) with those 56 queries;
* a shared head maps each attended vector and its features to a correction of the NNLS share;
  the concentration is the corrected share, non-negative and hard-masked to the candidates.

The head's last layer starts at zero, so an untrained network answers NNLS; what it learns is
how unmixing errs (overlapping signatures, anharmonic mixing of several dopants, smoothing),
which carries over to hosts it never saw because every input is relative to the host's own
references.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from defectnet.data.references import LEVELS, TWO_POINT
from defectnet.elements import N_DOPANTS
from defectnet.errors import UserError
from defectnet.model.defectnet import input_channels, network_config, token_encoder
from defectnet.model.unmixing import nonnegative_unmix

TINY = 1e-6


class ReferenceDefectNet(nn.Module):
    """Concentrations of the candidate dopants from pristine and doped spectra and the host's
    single-dopant references."""

    reads_references = True

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
        difference_gain: float = 20.0,
        unmix_iterations: int = 300,
        levels: Sequence[str] = TWO_POINT,
    ):
        self.config = network_config(locals())
        super().__init__()
        if not levels or set(levels) - set(LEVELS):
            raise UserError(
                f"model.model.levels: {list(levels)} — each must be one of {list(LEVELS)} "
                "(data.references.LEVELS), at least one."
            )
        self.levels = list(levels)
        self.register_buffer(
            "level_rows", torch.tensor([LEVELS.index(level) for level in levels]), persistent=False
        )
        n_features = 2 + 4 * len(levels) + 4
        self.difference_gain = difference_gain
        self.unmix_iterations = unmix_iterations
        self.encoder = token_encoder(self.config)
        self.element = nn.Parameter(torch.zeros(n_dopants, d_model))
        nn.init.normal_(self.element, std=0.02)
        self.signature = nn.Sequential(
            nn.Linear(len(levels) * n_points, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.features = nn.Linear(n_features, d_model)
        self.query_norm = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.head = nn.Sequential(
            nn.LayerNorm(d_model + n_features),
            nn.Linear(d_model + n_features, head_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(head_hidden, 1),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def unmixing_features(
        self, diff: torch.Tensor, signatures: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NNLS shares [B, 56] and per-candidate features [B, 56, 2 + 4 × levels + 4] of a
        difference spectrum [B, L] against the candidates' signatures [B, levels × 56, L] (all
        scaled alike)."""
        n_dopants = candidates.shape[-1]
        n_levels = len(self.levels)
        known = signatures.abs().sum(-1) > 0  # [B, levels × 56]
        active = candidates.repeat(1, n_levels).bool() & known
        parts, residual = nonnegative_unmix(diff, signatures, active, self.unmix_iterations)
        parts = parts.unflatten(-1, (n_levels, n_dopants))  # [B, levels, 56]
        share = parts.sum(1)
        strength = torch.linalg.vector_norm(signatures, dim=-1)  # [B, levels × 56]
        size = torch.linalg.vector_norm(diff, dim=-1, keepdim=True)  # [B, 1]
        overlap = (signatures * diff[:, None]).sum(-1)
        own = torch.where(known, overlap / strength.clamp_min(TINY) ** 2, 0.0)
        cosine = torch.where(known, overlap / (strength * size).clamp_min(TINY), 0.0)
        per_level = torch.stack(
            [own.clamp(-1.0, 2.0), cosine, torch.log(strength + TINY), known.to(share.dtype)],
            dim=-1,
        ).unflatten(1, (n_levels, n_dopants))  # [B, levels, 56, 4]
        n = candidates.sum(-1, keepdim=True)
        features = torch.cat(
            [
                torch.stack([share, parts[:, -1]], dim=-1),
                per_level.permute(0, 2, 1, 3).flatten(2),
                torch.stack(
                    [
                        torch.log(size + TINY).expand_as(share),
                        torch.log(residual[:, None] + TINY).expand_as(share),
                        share.sum(-1, keepdim=True).expand_as(share),
                        (n / 6).expand_as(share),
                    ],
                    dim=-1,
                ),
            ],
            dim=-1,
        )
        return share, features

    def forward(
        self,
        spectra: torch.Tensor,
        candidates: torch.Tensor,
        references: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """spectra [B, 3, L], candidates [B, 56], references [B, LEVELS × 56, L]
        (unit-concentration difference spectra, ``data.references.reference_matrix``; zero
        rows where the host has none; the network reads its ``levels`` of them) →
        concentrations [B, 56] and the candidates' mean attention over energy [B, L]."""
        if references is None:
            raise UserError(
                "this model reads the host's single-dopant references: give references=<folder "
                "of defectnet-generate stage=references> (data.references when training)."
            )
        if references.shape[1] != len(LEVELS) * candidates.shape[-1]:
            raise UserError(
                f"references: {references.shape[1]} rows per sample, this model reads "
                f"{len(LEVELS)} × {candidates.shape[-1]} (data.references.reference_matrix)."
            )
        x = input_channels(spectra, self.difference_gain)  # scaled by the pristine peak
        tokens = self.encoder(x)  # [B, L, d_model]
        diff = x[:, 1] - x[:, 0]
        n_dopants = candidates.shape[-1]
        mine = references.unflatten(1, (len(LEVELS), n_dopants))[:, self.level_rows].flatten(1, 2)
        signatures = mine / spectra[:, :1].amax(dim=-1, keepdim=True).clamp_min(1e-12)
        share, features = self.unmixing_features(diff, signatures, candidates)
        # a signature's size varies by orders of magnitude between dopants and hosts: its shape
        # enters the query (its levels side by side), its size the features
        norm = torch.linalg.vector_norm(signatures, dim=-1, keepdim=True).clamp_min(TINY)
        shape = (signatures / norm).unflatten(1, (len(self.levels), -1)).transpose(1, 2).flatten(2)
        query = self.query_norm(self.element + self.signature(shape) + self.features(features))
        attended, weights = self.attention(
            query, tokens, tokens, need_weights=True, average_attn_weights=True
        )
        correction = self.head(torch.cat([attended, features], dim=-1)).squeeze(-1)
        conc = F.relu(share + correction) * candidates
        mean_attention = (weights * candidates[..., None]).sum(1) / candidates.sum(
            -1, keepdim=True
        ).clamp_min(1)
        return conc, mean_attention
