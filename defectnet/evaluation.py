"""Methods compared on the same test splits: DefectNet (one model or a deep ensemble), the MLP
baseline, non-negative least-squares unmixing and the training mean.

Every method yields a [N, 56] prediction on a split; ``split_metrics`` turns it into the same
numbers for all (masked RMSE / MAE, distractor false positives, element identification
precision / recall / F1, error by concentration and by number of dopants). Each method's
presence threshold is chosen on the validation split (best F1), never on a test split. The
ensemble adds interval coverage; the open-set mode re-asks the models with every non-host
element as a candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from scipy.optimize import nnls

from defectnet.atomic import write_json_atomic, write_text_atomic
from defectnet.data.cache import network_input
from defectnet.data.datamodule import (
    TEST_SPLITS,
    Batch,
    PDoSDataModule,
    counting_noise,
    open_set_mask,
)
from defectnet.data.references import (
    LEVELS,
    ReferenceError,
    load_references,
    reference_columns,
)
from defectnet.elements import DOPANTS
from defectnet.ensemble import EnsemblePrediction, load_ensemble, network_members
from defectnet.errors import UserError
from defectnet.metrics import best_threshold, coverage, split_metrics
from defectnet.runtime import finish_wandb, instantiate_all, log_once

log = logging.getLogger(__name__)


def nnls_unmix(spectra: torch.Tensor, mask: torch.Tensor, references: list[dict]) -> np.ndarray:
    """Unmix each difference spectrum (doped − pristine, ``spectra`` [N, 2, L]) as a
    non-negative mix of its host's single-dopant difference spectra scaled to unit
    concentration, dilute and high-concentration (a dopant's concentration is its two shares
    together: a two-point model of its response); ``references`` holds each row's host
    references; candidates without a reference get 0."""
    pred = np.zeros(mask.shape, dtype=np.float64)
    for row, ref in enumerate(references):
        offered = np.flatnonzero(mask[row].numpy())
        pairs = [
            (s, c)
            for level in LEVELS
            for s, c in zip(offered, reference_columns(ref, offered, level))
            if c is not None
        ]
        if not pairs:
            continue
        diff = (spectra[row, 1] - spectra[row, 0]).numpy().astype(np.float64)
        conc, _ = nnls(np.stack([c for _, c in pairs], axis=1), diff)
        # a dopant's shares of its dilute and high-concentration signatures add up
        np.add.at(pred[row], [s for s, _ in pairs], conc)
    return np.clip(pred, 0, 1)


def nnls_predict(dm: PDoSDataModule, split: str, references: dict[str, dict]) -> np.ndarray:
    """``nnls_unmix`` of a split, each sample against its parent's references."""
    batch = dm.split_tensors(split)
    parents = [dm.dataset.parents[i] for i in batch.parent.tolist()]
    missing = sorted(set(parents) - set(references))
    if missing:
        raise ReferenceError(
            f"no single-dopant references for parent '{missing[0]}'; run stage=references "
            "for the data set's preset."
        )
    return nnls_unmix(batch.spectra, batch.candidates, [references[p] for p in parents])


def per_sample_table(dm: PDoSDataModule, split: str, pred: np.ndarray) -> list[dict]:
    """Each sample of a split: id, parent, true and predicted concentration per candidate."""
    idx = getattr(dm.splits, split)
    ids = dm.dataset.meta.get("sample_ids")
    batch = dm.split_tensors(split)
    mask, target = batch.candidates, batch.targets
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
    mask = dm.split_tensors(split).candidates
    return (dm.train_mean()[None] * mask).numpy()


COLUMNS = ("RMSE", "R²", "FPR", "F1")


def comparison_table(results: dict) -> str:
    """Markdown: one row per method, RMSE / R² / distractor FPR / F1 per split."""
    splits = [s for s in ("test_id", "test_ood") if any(s in m for m in results.values())]
    head = "| method | " + " | ".join(f"{s} {c}" for s in splits for c in COLUMNS) + " |"
    lines = [head, "|---" * (1 + len(COLUMNS) * len(splits)) + "|"]
    for method, by_split in results.items():
        cells = []
        for s in splits:
            m = by_split.get(s)
            cells += (
                [
                    f"{m['rmse']:.4f}",
                    f"{m['r2']:.2f}",
                    f"{m['distractor_fpr']:.2f}",
                    f"{m['f1']:.2f}",
                ]
                if m
                else ["—"] * len(COLUMNS)
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@torch.no_grad()
def undoped_crystals(
    networks, dm: PDoSDataModule, threshold: float, n_candidates: int, spread_weight: float
):
    """Each parent's pristine spectrum given as the doped one too, offered the ``n_candidates``
    dopants its samples offer most often: a model that knows "nothing here" calls none of them
    present. Per parent: the largest predicted concentration and whether every candidate's
    presence score (``EnsemblePrediction.presence``) stays below ``threshold``."""
    ds = dm.dataset
    out = {}
    for k, parent in enumerate(ds.parents):
        rows = torch.nonzero(ds.parent_index == k).ravel()
        offered = ds.mask[rows].sum(0)
        mask = torch.zeros(1, offered.shape[0])
        mask[0, offered.argsort(descending=True)[:n_candidates]] = 1
        mask *= (offered > 0).to(mask.dtype)  # never a dopant the parent was not offered
        i = rows[0]
        x = network_input(ds.pristine[i], ds.pristine[i], ds.composition[i])
        refs = dm.references[k][None] if dm.references is not None else None
        answer = EnsemblePrediction.from_members(
            np.stack([net(x, mask, refs)[0].numpy() for net in networks])
        )
        offered_now = mask[0].numpy() > 0
        out[parent] = {
            "held_out": parent in dm.splits.ood_parents,
            "n_candidates": int(mask.sum()),
            "max_prediction": float(answer.mean[0][offered_now].max()),
            "read_undoped": bool(
                (answer.presence(spread_weight)[0][offered_now] < threshold).all()
            ),
        }
    return out


@torch.no_grad()
def open_set_scores(networks, batch, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Presence scores of every open-set candidate of a batch, and that mask."""
    mask = open_set_mask(batch.composition)
    members = np.stack([net(batch.inputs(), mask, batch.references)[0].numpy() for net in networks])
    return EnsemblePrediction.from_members(members).presence(weight), mask.numpy()


def open_set_threshold(
    networks, dm: PDoSDataModule, weight: float, levels, max_fpr, undoped_quantile: float = 0.95
) -> float:
    """The open-set presence threshold: best F1 on val at the distractor FPR bound, over val as
    it is and with counting noise at each of ``levels`` (a measurement has noise, and a model
    that answers exactly 0 on clean spectra answers a little on noisy ones), never 0, and at
    least the ``undoped_quantile`` of what the val parents' noisy undoped spectra score."""
    val = dm.split_tensors("val")
    generator = torch.Generator().manual_seed(0)
    scores, masks, targets = [], [], []
    for level in [0.0, *levels]:
        batch = val
        if level:
            batch = val._replace(
                spectra=counting_noise(val.spectra, level, dm.dataset.grid.step, generator)
            )
        score, mask = open_set_scores(networks, batch, weight)
        scores.append(score)
        masks.append(mask)
        targets.append(val.targets.numpy())
    score, mask, target = map(np.concatenate, (scores, masks, targets))
    threshold = best_threshold(score, target, mask, max_fpr)
    if threshold <= 0:  # "anything above nothing": the smallest answer the val spectra gave
        threshold = float(np.min(score[(mask > 0) & (score > 0)], initial=1e-4))
    # With ~50 candidates a per-candidate false-alarm bound still lets most undoped spectra
    # name something: the threshold also keeps the val parents' noisy undoped spectra quiet.
    quiet = undoped_scores(networks, dm, weight, levels, rows=val_parent_rows(dm))
    if quiet.size:
        threshold = max(threshold, float(np.quantile(quiet, undoped_quantile)))
    return threshold


def val_parent_rows(dm: PDoSDataModule) -> list[int]:
    """One sample of each parent in the val split (its pristine spectrum is the parent's)."""
    parents = sorted({int(dm.dataset.parent_index[i]) for i in dm.splits.val})
    return [int(torch.nonzero(dm.dataset.parent_index == k)[0]) for k in parents]


def noisy_undoped(dm: PDoSDataModule, rows: list[int], level: float, generator) -> Batch:
    """The pristine spectra of ``rows``' parents with counting noise at ``level`` given as both
    spectra (two draws), offered their usual candidates: undoped crystals as measured."""
    ds = dm.dataset
    pristine = ds.pristine[rows]
    spectra = torch.stack(
        [counting_noise(pristine, level, ds.grid.step, generator) for _ in range(2)], dim=1
    )
    refs = dm.references[ds.parent_index[rows]] if dm.references is not None else None
    return Batch(
        spectra,
        ds.composition[rows],
        ds.mask[rows],
        ds.targets[rows] * 0,
        torch.zeros(len(rows), dtype=torch.int64),
        ds.parent_index[rows],
        refs,
    )


def undoped_scores(networks, dm, weight: float, levels, rows, draws: int = 5) -> np.ndarray:
    """The largest open-set presence score of each noisy undoped spectrum of ``rows``' parents
    (``noisy_undoped``), ``draws`` times at each level."""
    generator = torch.Generator().manual_seed(2)
    out = []
    for level in levels:
        for _ in range(draws):
            score, mask = open_set_scores(
                networks, noisy_undoped(dm, rows, level, generator), weight
            )
            out.append(np.where(mask > 0, score, -np.inf).max(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def undoped_open_set(networks, dm: PDoSDataModule, threshold: float, weight: float, levels):
    """Per noise level and parent: its noisy undoped spectra (``noisy_undoped``) in the open
    set, read as undoped when nothing is called present."""
    ds = dm.dataset
    generator = torch.Generator().manual_seed(1)
    rows = [int(torch.nonzero(ds.parent_index == k)[0]) for k in range(len(ds.parents))]
    out = {}
    for level in levels:
        score, mask = open_set_scores(networks, noisy_undoped(dm, rows, level, generator), weight)
        called = (score > threshold) & (mask > 0)
        out[f"{level:.0%}"] = {
            parent: {
                "held_out": parent in dm.splits.ood_parents,
                "read_undoped": not bool(called[k].any()),
                "called": [DOPANTS[i] for i in np.flatnonzero(called[k])],
            }
            for k, parent in enumerate(ds.parents)
        }
    return out


def _check_split(paths, dm: PDoSDataModule) -> None:
    """Refuse checkpoints whose training held out other parents than this evaluation tests."""
    from defectnet.model.checkpoint import checkpoint_data

    for path in paths:
        held = checkpoint_data(path).get("ood_parents")
        if held is not None and sorted(held) != sorted(dm.splits.ood_parents):
            raise UserError(
                f"{path}: trained with test-OOD parents {held}, this data config holds out "
                f"{dm.splits.ood_parents}; evaluate with the data settings of training "
                "(data.seed, data.ood_parents, data.path)."
            )


def _cached(fn: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
    memo: dict[str, np.ndarray] = {}
    return lambda split: memo[split] if split in memo else memo.setdefault(split, fn(split))


def evaluate(cfg: DictConfig) -> dict:
    """DefectNet (one checkpoint or a deep ensemble) against the MLP baseline, NNLS unmixing
    and the training mean on test-ID and test-OOD; open-set identification and interval
    coverage; metrics.json, comparison.md and figures in the run folder."""
    log_once()
    from defectnet.plots import error_profile_plot, quartile_parity_plot

    # the references NNLS reads are the ones a reference-informed network reads
    dm: PDoSDataModule = instantiate(
        cfg.data, references=cfg.data.get("references") or cfg.get("references")
    )
    dm.setup("test")
    networks, grid, stored, paths = load_ensemble(cfg.ckpt_path)
    if grid != dm.dataset.grid:
        raise UserError(
            f"ckpt_path: trained on grid {grid}, the data set {dm.path} is on {dm.dataset.grid}."
        )
    _check_split(paths, dm)
    name = "DefectNet" if len(networks) == 1 else f"DefectNet (ensemble of {len(networks)})"
    # every member's answer, combined once per split (mean, spread, presence score, intervals)
    answers = _cached(
        lambda s: EnsemblePrediction.from_members(network_members(networks, dm, s)[0])
    )
    has_val = len(dm.splits.val) > 0
    # the ensemble's presence rule is calibrated on val as a whole; without val the members'
    # own thresholds apply to their mean
    weight = float(cfg.presence.spread_weight) if len(networks) > 1 and has_val else 0.0

    def open_set_answer(split):
        members, mask = network_members(networks, dm, split, open_set=True)
        answer = EnsemblePrediction.from_members(members)
        return answer.mean, answer.presence(weight), mask

    methods = {name: lambda s: answers(s).mean}
    # what each method's presence is called on (the others: their concentrations)
    scores = {name: _cached(lambda s: answers(s).presence(weight))}
    if cfg.get("mlp_ckpt"):
        mlp, *_, mlp_paths = load_ensemble(cfg.mlp_ckpt)
        _check_split(mlp_paths, dm)
        methods["MLP"] = _cached(lambda s: network_members(mlp, dm, s)[0].mean(0))
    if cfg.get("references"):
        references = load_references(cfg.references)
        methods["NNLS"] = _cached(lambda s: nnls_predict(dm, s, references))
    methods["training mean"] = lambda s: train_mean_predict(dm, s)
    scores = {m: scores.get(m, f) for m, f in methods.items()}

    def truth(split):
        batch = dm.split_tensors(split)
        return batch.targets.numpy(), batch.candidates.numpy()

    max_fpr = cfg.presence.max_distractor_fpr
    thresholds = {
        m: best_threshold(scores[m]("val"), *truth("val"), max_fpr) if has_val else stored.guided
        for m in methods
    }
    open_threshold = stored.open_set
    levels = [float(v) for v in cfg.presence.get("noise_levels", [])]
    if has_val and cfg.get("open_set", True):
        open_threshold = open_set_threshold(
            networks, dm, weight, levels, max_fpr, float(cfg.presence.get("undoped_quantile", 0.95))
        )
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {m: {} for m in methods}
    extra: dict = {
        "thresholds": thresholds,
        # what defectnet-predict needs to call presence as evaluated here (ship_model's card)
        "presence": {
            "spread_weight": weight,
            "threshold": thresholds[name],
            "open_set_threshold": open_threshold,
        },
        "open_set": {},
        "calibration": {},
        "predictions": {},
    }
    level = float(cfg.interval)
    scale = 1.0
    if len(networks) > 1 and has_val:
        scale = answers("val").interval_scale(*truth("val"), level)
        extra["interval_scale"] = scale
    figures = []
    for split in (s for s in TEST_SPLITS if len(getattr(dm.splits, s))):
        target, mask = truth(split)
        for m, f in methods.items():
            results[m][split] = split_metrics(
                f(split), target, mask, thresholds[m], scores[m](split)
            )
        mean = methods[name](split)
        extra["predictions"][split] = per_sample_table(dm, split, mean)
        if len(networks) > 1:
            ensemble = answers(split)
            raw = coverage(*ensemble.interval(level), target, mask)
            scaled = coverage(*ensemble.interval(level, scale), target, mask)
            extra["calibration"][split] = {
                "interval": level,
                **raw,
                "interval_scale": scale,
                **{f"scaled_{k}": v for k, v in scaled.items()},
            }
        if cfg.get("open_set", True):
            open_mean, open_score, open_mask = open_set_answer(split)
            o = split_metrics(open_mean, target, open_mask, open_threshold, open_score)
            g = results[name][split]
            extra["open_set"][split] = {
                "threshold": open_threshold,
                "open_precision": o["precision"],
                "open_recall": o["recall"],
                "open_f1": o["f1"],
                "guided_threshold": thresholds[name],
                "guided_precision": g["precision"],
                "guided_recall": g["recall"],
                "guided_f1": g["f1"],
            }
        figures.append(
            quartile_parity_plot(
                mean, target, mask, out_dir / f"parity_quartiles_{split}.png", f"{name}, {split}"
            )
        )
        figures.append(
            error_profile_plot(
                {m: r[split] for m, r in results.items()},
                out_dir / f"error_profile_{split}.png",
                split,
            )
        )
    undoped = undoped_crystals(networks, dm, thresholds[name], cfg.undoped_candidates, weight)
    extra["undoped_crystals"] = undoped
    if cfg.get("open_set", True) and levels:
        extra["undoped_open_set"] = undoped_open_set(networks, dm, open_threshold, weight, levels)
        for level, reads in extra["undoped_open_set"].items():
            log.info(
                "undoped crystals in open set with %s noise: %d of %d read as undoped "
                "(held out: %d of %d)",
                level,
                sum(r["read_undoped"] for r in reads.values()),
                len(reads),
                sum(r["read_undoped"] for r in reads.values() if r["held_out"]),
                sum(r["held_out"] for r in reads.values()),
            )
    table = comparison_table(results)
    metrics = {
        "methods": results,
        **extra,
        "checkpoints": [str(p) for p in paths],
        "ood_parents": dm.splits.ood_parents,
        "figures": [f.name for f in figures],
    }
    write_json_atomic(out_dir / "metrics.json", metrics, indent=2)
    write_text_atomic(out_dir / "comparison.md", table + "\n")
    _log_to_loggers(instantiate_all(cfg.get("logger")), results, figures)
    finish_wandb()
    log.info("presence thresholds (best F1 on val, distractor FPR ≤ %s): %s", max_fpr, thresholds)
    log.info("\n%s", table)
    for split, o in extra["open_set"].items():
        log.info(
            "%s open set: precision %.2f recall %.2f at %.3g (guided: %.2f / %.2f at %.3g)",
            split,
            o["open_precision"],
            o["open_recall"],
            o["threshold"],
            o["guided_precision"],
            o["guided_recall"],
            o["guided_threshold"],
        )
    for split, c in extra["calibration"].items():
        log.info(
            "%s: %.0f %% intervals hold %.0f %% of candidates, %.0f %% of present dopants; "
            "widened ×%.2f (chosen on val): %.0f %% / %.0f %%",
            split,
            100 * c["interval"],
            100 * c["coverage_candidates"],
            100 * c["coverage_present"],
            c["interval_scale"],
            100 * c["scaled_coverage_candidates"],
            100 * c["scaled_coverage_present"],
        )
    for held, label in ((False, "seen"), (True, "held-out")):
        group = [u for u in undoped.values() if u["held_out"] == held]
        if group:
            log.info(
                "undoped crystals (pristine as doped, up to %d candidates), %s parents: %d of %d "
                "read as undoped at threshold %.3g (largest prediction %.3f)",
                cfg.undoped_candidates,
                label,
                sum(u["read_undoped"] for u in group),
                len(group),
                thresholds[name],
                max(u["max_prediction"] for u in group),
            )
    if "interval_scale" in extra:
        log.info(
            "for the model card (scripts/ship_model.py evaluation=%s): interval_scale %.2f, "
            "presence on mean − %g × spread above %.4g (open set %.4g)",
            out_dir,
            scale,
            weight,
            thresholds[name],
            open_threshold,
        )
    return metrics


def _log_to_loggers(loggers, results: dict, figures: list[Path]) -> None:
    for lg in loggers:
        if hasattr(lg, "log_image"):
            for f in figures:
                lg.log_image(key=f.stem, images=[str(f)])
        lg.log_metrics(
            {
                f"{m}/{s}/{k}": v
                for m, by_split in results.items()
                for s, r in by_split.items()
                for k, v in r.items()
            }
        )
