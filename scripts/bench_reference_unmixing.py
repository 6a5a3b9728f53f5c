"""Benchmark: how far do a host's own single-dopant references carry on hosts never trained on?

Spectrum-only models (DefectNet, the MLP) have to learn how each dopant changes each host from
the training hosts alone; NNLS unmixing is instead handed the unseen host's single-dopant
difference spectra (``stage=references``). This measures a third way: NNLS followed by a learned
correction, gradient-boosted trees fitted on the training split that map per-candidate features
built only from the sample's spectra and its host's references (the NNLS share, the candidate's
own least-squares share and cosine with the difference spectrum, the reference's strength, the
difference's size and the NNLS residual, the NNLS total, the number of candidates) to the
concentration. The features carry no host identity, so what the trees learn is how unmixing errs,
which is the same on hosts they never saw. Prints RMSE, R² and element F1 (threshold chosen on
val at the project's distractor bound) for the training mean, NNLS and NNLS + trees on val,
test-ID and test-OOD. Asserts nothing.
"""

from __future__ import annotations

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from scipy.optimize import nnls
from sklearn.ensemble import HistGradientBoostingRegressor

from defectnet.cli import CONF_DIR
from defectnet.data.datamodule import Batch, PDoSDataModule
from defectnet.data.references import load_references, reference_columns
from defectnet.difference import BANDS, band_label
from defectnet.evaluation import nnls_unmix, train_mean_predict
from defectnet.metrics import best_threshold, split_metrics

FEATURES = (
    "nnls share",
    "own least-squares share",
    "cosine with the difference",
    "reference strength",
    "difference size",
    "nnls residual",
    "nnls total",
    "candidates",
    "has reference",
)


def candidate_features(batch: Batch, parents: list[str], references: dict) -> tuple:
    """Per candidate entry of a split (``batch``, its rows' parents indexing ``parents``):
    features [n, len(FEATURES)], (row, slot) of each entry and the split's NNLS prediction
    [rows, 56]. Spectra sizes are relative to the pristine spectrum's norm, so hosts of any
    energy scale compare."""
    mask = batch.candidates.numpy()
    nnls_pred = np.zeros(mask.shape)
    rows, features = [], []
    for row, parent_index in enumerate(batch.parent.tolist()):
        slots = np.flatnonzero(mask[row])
        columns = reference_columns(references[parents[parent_index]], slots)
        known = [c is not None for c in columns]
        width = batch.spectra.shape[-1]
        columns = [c if c is not None else np.zeros(width) for c in columns]
        diff = (batch.spectra[row, 1] - batch.spectra[row, 0]).numpy().astype(np.float64)
        basis = np.stack(columns, axis=1)
        share, residual = nnls(basis, diff) if any(known) else (np.zeros(len(slots)), 0.0)
        share = np.clip(share, 0, 1)
        nnls_pred[row, slots] = share
        scale = np.linalg.norm(batch.spectra[row, 0].numpy())
        size = np.linalg.norm(diff)
        for k, slot in enumerate(slots):
            col = basis[:, k]
            strength = np.linalg.norm(col)
            own = col @ diff / strength**2 if strength > 0 else 0.0
            cosine = col @ diff / (strength * size) if strength > 0 and size > 0 else 0.0
            features.append(
                [
                    share[k],
                    own,
                    cosine,
                    strength / scale,
                    size / scale,
                    residual / scale,
                    share.sum(),
                    len(slots),
                    float(known[k]),
                ]
            )
            rows.append((row, slot))
    return np.asarray(features), np.asarray(rows), nnls_pred


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench/reference_unmixing")
def main(cfg: DictConfig) -> None:
    dm: PDoSDataModule = instantiate(cfg.data)
    dm.setup()
    references = load_references(cfg.references)
    missing = sorted(set(dm.dataset.parents) - set(references))
    if missing:
        raise SystemExit(f"{cfg.references}: no references for {missing}; run stage=references.")
    splits = ("train", "val", "test_id", "test_ood")
    truth = {s: dm.split_tensors(s) for s in splits}
    data = {s: candidate_features(truth[s], dm.dataset.parents, references) for s in splits}
    trees = HistGradientBoostingRegressor(**cfg.trees, random_state=cfg.seed)
    features, entries, _ = data["train"]
    trees.fit(features, truth["train"].targets.numpy()[entries[:, 0], entries[:, 1]])
    preds = {}
    for split in splits[1:]:
        features, entries, nnls_pred = data[split]
        corrected = np.zeros_like(nnls_pred)
        corrected[entries[:, 0], entries[:, 1]] = np.clip(trees.predict(features), 0, 1)
        batch = truth[split]
        hosts = [references[dm.dataset.parents[i]] for i in batch.parent.tolist()]
        preds[split] = {
            "training mean": train_mean_predict(dm, split),
            "NNLS": nnls_pred,
            "NNLS + trees": corrected,
            "NNLS, two-point": nnls_unmix(batch.spectra, batch.candidates, hosts),
        }
    print(
        f"{cfg.data.path}: {len(dm.dataset.parents)} parents; test-OOD "
        f"{len(dm.splits.ood_parents)} parents; train {len(dm.splits.train)}, val "
        f"{len(dm.splits.val)}, test-ID {len(dm.splits.test_id)}, test-OOD "
        f"{len(dm.splits.test_ood)} samples"
    )
    print("| method | split | RMSE | R² | F1 | distractor FPR |\n|---|---|---|---|---|---|")
    for method in preds["val"]:
        val = truth["val"]
        threshold = best_threshold(
            preds["val"][method],
            val.targets.numpy(),
            val.candidates.numpy(),
            cfg.max_distractor_fpr,
        )
        for split in splits[1:]:
            t = truth[split]
            m = split_metrics(
                preds[split][method], t.targets.numpy(), t.candidates.numpy(), threshold
            )
            print(
                f"| {method} | {split} | {m['rmse']:.4f} | {m['r2']:.2f} | {m['f1']:.2f} | "
                f"{m['distractor_fpr']:.2f} |"
            )

    evaluated = splits[1:]
    print(
        saturation_table(
            np.concatenate([preds[s]["NNLS, two-point"] for s in evaluated]),
            np.concatenate([truth[s].targets.numpy() for s in evaluated]),
            np.concatenate([truth[s].candidates.numpy() for s in evaluated]),
        )
    )


def saturation_table(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> str:
    """Where NNLS's shares fall short: median share / truth per concentration band, the dopant
    alone and among several; then the truth's total over NNLS's total by NNLS's total."""
    present = (target > 0) & (mask > 0)
    several = (target > 0).sum(axis=1) > 1
    lines = [
        "| dopant's concentration | alone: entries, median share / truth "
        "| among several: entries, median share / truth |",
        "|---|---|---|",
    ]
    for lo, hi in BANDS:
        cells = []
        for group in (~several, several):
            keep = present & group[:, None] & (target >= lo) & (target < hi)
            ratio = pred[keep] / target[keep]
            cells.append(f"{keep.sum()}, {np.median(ratio):.2f}" if keep.any() else "0, —")
        lines.append(f"| {band_label(lo, hi)} | " + " | ".join(cells) + " |")
    lines += ["", "| NNLS total | samples | median true total / NNLS total |", "|---|---|---|"]
    found, true = pred.sum(axis=1), target.sum(axis=1)
    for lo, hi in ((0.01, 0.03), (0.03, 0.06), (0.06, 0.1), (0.1, 0.15), (0.15, 1.0)):
        keep = (found >= lo) & (found < hi)
        if keep.any():
            ratio = np.median(true[keep] / found[keep])
            lines.append(f"| {lo:g}–{hi:g} | {keep.sum()} | {ratio:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
