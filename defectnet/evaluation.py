"""Methods compared on the same test splits: DefectNet (one model or a deep ensemble), the MLP
baseline, non-negative least-squares unmixing and the training mean.

Every method yields a [N, 56] prediction on a split; ``split_metrics`` turns it into the same
numbers for all (masked RMSE / MAE, distractor false positives, element identification
precision / recall / F1, error by concentration and by number of dopants, quartiles of the
per-sample error). The ensemble adds interval coverage; the open-set mode re-asks the models
with every non-host element as a candidate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from defectnet.data.datamodule import PDoSDataModule, open_set_mask
from defectnet.elements import DOPANTS

CONCENTRATION_BINS = (0.002, 0.01, 0.03, 0.1, 0.25)


class ReferenceError(ValueError):
    """Single-dopant reference spectra that are missing or do not fit the data set."""


def load_references(folder: str | Path) -> dict[str, dict]:
    """``references/<parent id>.json`` files written by ``defectnet-generate stage=references``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ReferenceError(
            f"{folder}: no single-dopant references; compute them with "
            "defectnet-generate generate=<preset> stage=references (same preset as the data set)."
        )
    return {json.loads(f.read_text())["parent_id"]: json.loads(f.read_text()) for f in files}


def nnls_predict(dm: PDoSDataModule, split: str, references: dict[str, dict]) -> np.ndarray:
    """Unmix each difference spectrum (doped − pristine) as a non-negative mix of the host's
    single-dopant difference spectra scaled to unit concentration; candidates without a
    reference get 0."""
    x, mask, *_ = dm.split_tensors(split)
    parents = [dm.dataset.parents[i] for i in dm.dataset.parent_index[dm_index(dm, split)]]
    pred = np.zeros(mask.shape, dtype=np.float64)
    for row, parent in enumerate(parents):
        ref = references.get(parent)
        if ref is None:
            raise ReferenceError(
                f"no single-dopant references for parent '{parent}'; run stage=references "
                "for the data set's preset."
            )
        pristine = np.asarray(ref["pristine"])
        cols, slots = [], []
        for slot in np.flatnonzero(mask[row].numpy()):
            entry = ref["dopants"].get(DOPANTS[slot])
            if entry is not None:
                cols.append((np.asarray(entry["spectrum"]) - pristine) / entry["concentration"])
                slots.append(slot)
        if not cols:
            continue
        diff = (x[row, 1] - x[row, 0]).numpy().astype(np.float64)
        conc, _ = nnls(np.stack(cols, axis=1), diff)
        pred[row, slots] = np.clip(conc, 0, 1)
    return pred


def dm_index(dm: PDoSDataModule, split: str) -> torch.Tensor:
    return torch.as_tensor(getattr(dm.splits, split))


def per_sample_table(dm: PDoSDataModule, split: str, pred: np.ndarray) -> list[dict]:
    """Each sample of a split: id, parent, true and predicted concentration per candidate."""
    idx = getattr(dm.splits, split)
    ids = dm.dataset.meta.get("sample_ids")
    _, mask, target, *_ = dm.split_tensors(split)
    rows = []
    for row, i in enumerate(idx):
        slots = np.flatnonzero(mask[row].numpy())
        rows.append(
            {
                "sample": ids[i] if ids else int(i),
                "parent": dm.dataset.parents[int(dm.dataset.parent_index[i])],
                "true": {DOPANTS[k]: round(float(target[row, k]), 6) for k in slots},
                "predicted": {DOPANTS[k]: round(float(pred[row, k]), 6) for k in slots},
            }
        )
    return rows


def train_mean_predict(dm: PDoSDataModule, split: str) -> np.ndarray:
    _, mask, *_ = dm.split_tensors(split)
    return (dm.train_mean()[None] * mask).numpy()


@torch.no_grad()
def network_members(networks, dm: PDoSDataModule, split: str, open_set: bool = False):
    """[M, N, 56] predictions of every network, with the given or the open-set candidates."""
    x, mask, *_ = dm.split_tensors(split)
    if open_set:
        mask = open_set_mask(x)
    return np.stack([net(x, mask)[0].numpy() for net in networks]), mask.numpy()


def split_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, threshold: float
) -> dict[str, float]:
    """The comparison's numbers for one method on one split (candidate entries only)."""
    sel = mask > 0
    err = (pred - target) ** 2
    present, called = target > 0, pred > threshold
    tp = float((called & present & sel).sum())
    fp = float((called & ~present & sel).sum())
    fn = float((~called & present & sel).sum())
    distractor = sel & ~present
    out = {
        "rmse": float(np.sqrt(err[sel].mean())),
        "mae": float(np.abs(pred - target)[sel].mean()),
        "distractor_fpr": float(called[distractor].mean()) if distractor.any() else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }
    p, r = out["precision"], out["recall"]
    out["f1"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    n_dopants = present.sum(1)
    for n in np.unique(n_dopants):
        rows = n_dopants == n
        out[f"rmse_n{int(n)}"] = float(np.sqrt(err[rows][sel[rows]].mean()))
    edges = CONCENTRATION_BINS
    for lo, hi in zip(edges[:-1], edges[1:]):
        cell = present & sel & (target >= lo) & (target < hi)
        if cell.any():
            out[f"rmse_c{lo:g}-{hi:g}"] = float(np.sqrt(err[cell].mean()))
    return out


def per_sample_mse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return ((pred - target) ** 2 * mask).sum(1) / np.clip(mask.sum(1), 1, None)


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


def comparison_table(results: dict) -> str:
    """Markdown: one row per method, RMSE / distractor FPR / F1 per split."""
    splits = [s for s in ("test_id", "test_ood") if any(s in m for m in results.values())]
    head = "| method | " + " | ".join(f"{s} RMSE | {s} FPR | {s} F1" for s in splits) + " |"
    lines = [head, "|---" * (1 + 3 * len(splits)) + "|"]
    for method, by_split in results.items():
        cells = []
        for s in splits:
            m = by_split.get(s)
            cells += (
                [f"{m['rmse']:.4f}", f"{m['distractor_fpr']:.2f}", f"{m['f1']:.2f}"]
                if m
                else ["—"] * 3
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
