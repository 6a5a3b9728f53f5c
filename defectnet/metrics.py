"""Masked metrics shared by training, the LightningModule and the evaluation: losses and
errors over candidate entries only, element identification at a presence threshold, the
threshold with the best F1, and the coverage of uncertainty intervals. ``split_metrics`` is the
one implementation of a split's figures; Lightning's val and test use it through the
torchmetrics ``SplitMetrics``."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

CONCENTRATION_BINS = (0.002, 0.01, 0.03, 0.1, 0.25)
# concentration bands for detection rates: dilute, moderate, heavy doping
DETECTION_BANDS = ((0.002, 0.01), (0.01, 0.05), (0.05, 0.25))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over candidate entries; entries outside the mask do not count."""
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1)


def masked_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over candidate entries. Its best answer is the median of what the
    spectrum allows, not the mean: a distractor that is more likely absent than present gets
    exactly 0 instead of a small share of its chance of being there."""
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1)


# model.loss → the training loss over candidate entries
LOSSES = {"squared": masked_mse, "absolute": masked_mae}


class SplitMetrics(Metric):
    """One split's metrics during training (val, test-ID, test-OOD), accumulated over batches
    and processes and computed by ``split_metrics``, the implementation the evaluation uses:
    masked RMSE / MAE / R², distractor false positives, element F1, RMSE per number of
    coexisting dopants (the keys training logs)."""

    full_state_update = False
    LOGGED = ("rmse", "mae", "r2", "distractor_fpr")

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold
        for name in ("pred", "target", "mask"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, pred, target, mask, n_dopants=None) -> None:
        self.pred.append(pred.detach().float())
        self.target.append(target.detach().float())
        self.mask.append(mask.detach().float())

    def compute(self) -> dict[str, torch.Tensor]:
        if isinstance(self.pred, list) and not self.pred:  # after a sync: one tensor
            return {}
        pred, target, mask = (
            dim_zero_cat(getattr(self, k)).cpu().numpy() for k in ("pred", "target", "mask")
        )
        m = split_metrics(pred, target, mask, float(self.threshold))
        out = {k: m[k] for k in self.LOGGED if not np.isnan(m[k])}
        out["element_f1"] = m["f1"]
        out |= {k: v for k, v in m.items() if k.startswith("rmse_n")}
        return {k: torch.tensor(float(v)) for k, v in out.items()}


def masked_rmse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    return float(torch.sqrt(((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1)))


def split_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    threshold: float,
    score: np.ndarray | None = None,
) -> dict[str, float]:
    """The comparison's numbers for one method on one split (candidate entries only).
    Presence is called where ``score`` (default: the predicted concentration) exceeds
    ``threshold``; an ensemble calls it on its lower bound (``EnsemblePrediction.presence``)."""
    sel = mask > 0
    err = (pred - target) ** 2
    present, called = target > 0, (pred if score is None else score) > threshold
    tp = float((called & present & sel).sum())
    fp = float((called & ~present & sel).sum())
    fn = float((~called & present & sel).sum())
    distractor = sel & ~present
    residual = err[sel].sum()
    spread = ((target[sel] - target[sel].mean()) ** 2).sum()
    out = {
        "rmse": float(np.sqrt(err[sel].mean())),
        "r2": float(1 - residual / spread) if spread > 0 else float("nan"),
        "mae": float(np.abs(pred - target)[sel].mean()),
        "distractor_fpr": float(called[distractor].mean()) if distractor.any() else float("nan"),
        "rmse_absent": float(np.sqrt(err[distractor].mean())) if distractor.any() else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }
    p, r = out["precision"], out["recall"]
    out["f1"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    n_dopants = present.sum(1)
    for n in np.unique(n_dopants):
        rows = n_dopants == n
        out[f"rmse_n{int(n)}"] = float(np.sqrt(err[rows][sel[rows]].mean()))
    for lo, hi in DETECTION_BANDS:  # recall of the dopants truly in each band
        cell = present & sel & (target >= lo) & (target < hi)
        if cell.any():
            out[f"detected_{lo:g}-{hi:g}"] = float(called[cell].mean())
    undoped = ~(present & sel).any(axis=1) & sel.any(axis=1)
    if undoped.any():  # samples with nothing in them: share read as empty (nothing called)
        out["undoped_read_empty"] = float((~(called & sel).any(axis=1))[undoped].mean())
    for key, (lo, hi) in concentration_bands().items():
        cell = present & sel & (target >= lo) & (target < hi)
        if cell.any():
            out[key] = float(np.sqrt(err[cell].mean()))
    return out


def concentration_bands() -> dict[str, tuple[float, float]]:
    """``split_metrics``' key of each band of ``CONCENTRATION_BINS`` (``rmse_c0.01-0.03``) and
    its edges."""
    edges = CONCENTRATION_BINS
    return {f"rmse_c{lo:g}-{hi:g}": (lo, hi) for lo, hi in zip(edges[:-1], edges[1:])}


def coverage(
    low: np.ndarray, high: np.ndarray, target: np.ndarray, mask: np.ndarray
) -> dict[str, float]:
    """Fraction of true concentrations inside the interval: all candidates, present dopants."""
    sel = mask > 0
    inside = (target >= low - 1e-9) & (target <= high + 1e-9)
    present = sel & (target > 0)
    return {
        "coverage_candidates": float(inside[sel].mean()),
        "coverage_present": float(inside[present].mean()) if present.any() else float("nan"),
        "mean_width_present": float((high - low)[present].mean())
        if present.any()
        else float("nan"),
    }


def best_threshold(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, max_fpr: float | None = None
) -> float:
    """The presence threshold with the best element-identification F1 on these samples among
    those that call at most ``max_fpr`` of the absent candidates present (None: any). Without
    the bound F1 alone favours calling every candidate present when most offered candidates
    are (F1 ≈ 0.8 with every distractor called); the bound fixes the false-alarm rate, as a
    detector's operating point is fixed, and the recall at it says what the model can see."""
    values = pred[mask > 0]
    # 0 calls every candidate present, the largest value none (FPR 0): a bound always holds
    candidates = np.unique(np.concatenate([[0.0], np.quantile(values, np.linspace(0, 1, 201))]))
    scores = [split_metrics(pred, target, mask, float(t)) for t in candidates]
    f1 = np.array([m["f1"] for m in scores])
    if max_fpr is not None:
        fpr = np.nan_to_num(np.array([m["distractor_fpr"] for m in scores]))
        f1 = np.where(fpr <= max_fpr, f1, -1.0)
    return float(candidates[int(np.argmax(f1))])
