"""Figures that the training and evaluation runs write as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def parity_plot(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, path: Path, title: str = ""
) -> Path:
    """Predicted vs true concentration of every candidate; distractors (true 0) in grey."""
    sel = mask.bool()
    p, t = pred[sel].numpy(), target[sel].numpy()
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
    present = t > 0
    ax.scatter(t[~present], p[~present], s=8, c="0.6", label="distractor (absent)")
    ax.scatter(t[present], p[present], s=8, c="C0", label="dopant")
    hi = max(float(t.max(initial=0)), float(p.max(initial=0)), 1e-3) * 1.05
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set(
        xlim=(0, hi),
        ylim=(0, hi),
        xlabel="true concentration",
        ylabel="predicted concentration",
        title=title,
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
