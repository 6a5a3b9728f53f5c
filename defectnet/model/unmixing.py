"""Non-negative least-squares unmixing of a batch on the network's device.

The reference-informed network starts from the unmixing answer and learns its correction, so the
unmixing has to run inside the forward pass, on whatever candidates augmentation offers.
Accelerated projected gradient (FISTA) on the normal equations: a fixed number of steps, every
sample of the batch at once, no host-side solver.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def nonnegative_unmix(
    target: torch.Tensor, columns: torch.Tensor, active: torch.Tensor, iterations: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shares x ≥ 0 [B, K] minimising ‖Σ_k x_k columns_k − target‖ over the ``active`` columns
    (inactive ones get 0), and the residual norm [B].

    target [B, L], columns [B, K, L], active [B, K] (bool).
    """
    a = columns * active[..., None]
    gram = a @ a.transpose(1, 2)  # [B, K, K]
    rhs = (a @ target[..., None]).squeeze(-1)  # [B, K]
    # step 1/λ_max; the identity keeps rows without an active column well defined
    lipschitz = torch.linalg.eigvalsh(gram.double())[:, -1].to(gram.dtype).clamp_min(1e-30)
    x = torch.zeros_like(rhs)
    y, t = x, 1.0
    for _ in range(iterations):
        x_next = (y - ((gram @ y[..., None]).squeeze(-1) - rhs) / lipschitz[:, None]).clamp_min(0)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y = x_next + (t - 1) / t_next * (x_next - x)
        x, t = x_next, t_next
    x = x * active
    residual = torch.linalg.vector_norm((x[..., None] * a).sum(1) - target, dim=-1)
    return x, residual
