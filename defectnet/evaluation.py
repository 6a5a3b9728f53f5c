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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from scipy.optimize import nnls

from defectnet.atomic import write_json_atomic, write_text_atomic
from defectnet.calibration import (
    full_cells_threshold,
    open_set_threshold,
    undoped_crystals,
    undoped_open_set,
)
from defectnet.data.datamodule import TEST_SPLITS, PDoSDataModule
from defectnet.data.references import (
    NNLS_VARIANTS,
    TWO_POINT,
    ReferenceError,
    holds_level,
    load_references,
    reference_columns,
)
from defectnet.elements import DOPANTS
from defectnet.ensemble import EnsemblePrediction, load_ensemble, network_members
from defectnet.errors import UserError
from defectnet.metrics import best_threshold, coverage, split_metrics
from defectnet.report import comparison_table, log_summary, log_to_loggers
from defectnet.runtime import finish_wandb, instantiate_all, log_once

log = logging.getLogger(__name__)


def nnls_unmix(
    spectra: torch.Tensor, mask: torch.Tensor, references: list[dict], levels=TWO_POINT
) -> np.ndarray:
    """Unmix each difference spectrum (doped − pristine, ``spectra`` [N, 2, L]) as a
    non-negative mix of its host's single-dopant difference spectra scaled to unit
    concentration at ``levels`` (by default dilute and high-concentration; a dopant's
    concentration is its shares together: a two-point model of its response); ``references``
    holds each row's host references; candidates without a reference get 0."""
    pred = np.zeros(mask.shape, dtype=np.float64)
    for row, ref in enumerate(references):
        offered = np.flatnonzero(mask[row].numpy())
        pairs = [
            (s, c)
            for level in levels
            for s, c in zip(offered, reference_columns(ref, offered, level))
            if c is not None
        ]
        if not pairs:
            continue
        diff = (spectra[row, 1] - spectra[row, 0]).numpy().astype(np.float64)
        conc, _ = nnls(np.stack([c for _, c in pairs], axis=1), diff)
        # a dopant's shares of its signatures at each level add up
        np.add.at(pred[row], [s for s, _ in pairs], conc)
    return np.clip(pred, 0, 1)


def nnls_predict(
    dm: PDoSDataModule, split: str, references: dict[str, dict], levels=TWO_POINT
) -> np.ndarray:
    """``nnls_unmix`` of a split, each sample against its parent's references at ``levels``."""
    batch = dm.split_tensors(split)
    parents = [dm.dataset.parents[i] for i in batch.parent.tolist()]
    missing = sorted(set(parents) - set(references))
    if missing:
        raise ReferenceError(
            f"no single-dopant references for parent '{missing[0]}'; run stage=references "
            "for the data set's preset."
        )
    return nnls_unmix(batch.spectra, batch.candidates, [references[p] for p in parents], levels)


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


def split_truth(dm: PDoSDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's true concentrations and offered candidates."""
    batch = dm.split_tensors(split)
    return batch.targets.numpy(), batch.candidates.numpy()


def baseline_methods(dm: PDoSDataModule, references: dict | None) -> dict[str, Callable]:
    """What every model is compared with, as functions of a split: two-point NNLS on the hosts'
    single-dopant references (when there are any; each of ``NNLS_VARIANTS`` too where they
    hold its levels) and the training mean."""
    methods = {}
    if references:
        methods["NNLS"] = cached_by_split(lambda s: nnls_predict(dm, s, references))
        for name, levels in NNLS_VARIANTS.items():
            if any(holds_level(ref, levels[-1]) for ref in references.values()):
                methods[name] = cached_by_split(
                    lambda s, levels=levels: nnls_predict(dm, s, references, levels)
                )
    methods["training mean"] = lambda s: train_mean_predict(dm, s)
    return methods


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


def cached_by_split(fn: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
    """``fn`` of a split, computed once per split."""
    memo: dict[str, np.ndarray] = {}
    return lambda split: memo[split] if split in memo else memo.setdefault(split, fn(split))


@dataclass
class Evaluation:
    """What one evaluation compares: the data, the networks, and every method as a function
    of a split (its concentrations, and what its presence is called on)."""

    cfg: DictConfig
    dm: PDoSDataModule
    networks: list
    stored: object  # the members' own thresholds
    paths: list[Path]
    name: str
    weight: float  # member spreads the ensemble's presence score subtracts
    answers: Callable  # split → EnsemblePrediction
    methods: dict[str, Callable]
    scores: dict[str, Callable]

    @property
    def has_val(self) -> bool:
        return len(self.dm.splits.val) > 0

    def truth(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return split_truth(self.dm, split)

    def open_set_answer(self, split: str):
        members, mask = network_members(self.networks, self.dm, split, open_set=True)
        answer = EnsemblePrediction.from_members(members)
        return answer.mean, answer.presence(self.weight), mask


def load_evaluation(cfg: DictConfig) -> Evaluation:
    """The data (with the references NNLS and a reference-informed network read), the model
    and the methods compared beside it."""
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
    answers = cached_by_split(
        lambda s: EnsemblePrediction.from_members(network_members(networks, dm, s)[0])
    )
    # the ensemble's presence rule is calibrated on val as a whole; without val the members'
    # own thresholds apply to their mean
    has_val = len(dm.splits.val) > 0
    weight = float(cfg.presence.spread_weight) if len(networks) > 1 and has_val else 0.0
    methods = {name: lambda s: answers(s).mean}
    # what each method's presence is called on (the others: their concentrations)
    scores = {name: cached_by_split(lambda s: answers(s).presence(weight))}
    if cfg.get("mlp_ckpt"):
        mlp, *_, mlp_paths = load_ensemble(cfg.mlp_ckpt)
        _check_split(mlp_paths, dm)
        methods["MLP"] = cached_by_split(lambda s: network_members(mlp, dm, s)[0].mean(0))
    references = load_references(cfg.references) if cfg.get("references") else None
    methods.update(baseline_methods(dm, references))
    scores = {m: scores.get(m, f) for m, f in methods.items()}
    return Evaluation(cfg, dm, networks, stored, paths, name, weight, answers, methods, scores)


def calibrate(ev: Evaluation) -> dict:
    """Chosen on val: each method's presence threshold (best F1 at the distractor FPR bound),
    the open-set threshold, and the ensemble's interval widening."""
    cfg = ev.cfg
    max_fpr = cfg.presence.max_distractor_fpr
    thresholds = {
        m: best_threshold(ev.scores[m]("val"), *ev.truth("val"), max_fpr)
        if ev.has_val
        else ev.stored.guided
        for m in ev.methods
    }
    open_threshold = ev.stored.open_set
    levels = [float(v) for v in cfg.presence.get("noise_levels", [])]
    if ev.has_val and cfg.get("open_set", True):
        quantile = float(cfg.presence.get("undoped_quantile", 0.95))
        open_threshold = open_set_threshold(
            ev.networks, ev.dm, ev.weight, levels, max_fpr, quantile
        )
    out = {"thresholds": thresholds, "open_threshold": open_threshold, "levels": levels}
    out["scale"], out["floor"] = 1.0, float(cfg.interval_floor)
    if len(ev.networks) > 1 and ev.has_val:
        out["scale"] = ev.answers("val").interval_scale(
            *ev.truth("val"), float(cfg.interval), out["floor"]
        )
    return out


def on_full_cells(ev: Evaluation, val_threshold: float) -> dict:
    """The presence threshold chosen on ``presence.full_cells`` (`full` cells of training
    hosts, read with ``presence.full_cells_references``) at the val rule's spread weight and
    FPR bound, and the figures there."""
    from defectnet.data.presets import converged_dataset

    presence = ev.cfg.presence
    refs = presence.get("full_cells_references")
    out = full_cells_threshold(
        ev.networks,
        converged_dataset(str(presence.full_cells)),
        load_references(refs) if refs else None,
        ev.weight,
        presence.max_distractor_fpr,
    )
    log.info(
        "presence on %d `full` cells of %s (generate=%s): threshold %.4f, F1 %.2f, distractor "
        "FPR %.2f (val's threshold %.4f)",
        out["cells"],
        ", ".join(out["hosts"]),
        presence.full_cells,
        out["threshold"],
        out["f1"],
        out["distractor_fpr"],
        val_threshold,
    )
    return {"preset": str(presence.full_cells), **out}


def score_split(ev: Evaluation, split: str, cal: dict, results: dict, extra: dict) -> None:
    """Every method's metrics on one test split; the ensemble's interval coverage and the
    open-set identification beside the guided one (into ``results`` and ``extra``)."""
    target, mask = ev.truth(split)
    thresholds, level = cal["thresholds"], float(ev.cfg.interval)
    for m, f in ev.methods.items():
        results[m][split] = split_metrics(
            f(split), target, mask, thresholds[m], ev.scores[m](split)
        )
    extra["predictions"][split] = per_sample_table(ev.dm, split, ev.methods[ev.name](split))
    if len(ev.networks) > 1:
        ensemble = ev.answers(split)
        raw = coverage(*ensemble.interval(level), target, mask)
        scaled = coverage(*ensemble.interval(level, cal["scale"], cal["floor"]), target, mask)
        extra["calibration"][split] = {
            "interval": level,
            **raw,
            "interval_scale": cal["scale"],
            "interval_floor": cal["floor"],
            **{f"scaled_{k}": v for k, v in scaled.items()},
        }
    if ev.cfg.get("open_set", True):
        open_mean, open_score, open_mask = ev.open_set_answer(split)
        o = split_metrics(open_mean, target, open_mask, cal["open_threshold"], open_score)
        g = results[ev.name][split]
        extra["open_set"][split] = {
            "threshold": cal["open_threshold"],
            "open_precision": o["precision"],
            "open_recall": o["recall"],
            "open_f1": o["f1"],
            "guided_threshold": thresholds[ev.name],
            "guided_precision": g["precision"],
            "guided_recall": g["recall"],
            "guided_f1": g["f1"],
        }


def split_figures(ev: Evaluation, split: str, results: dict, out_dir: Path) -> list[Path]:
    from defectnet.plots import error_profile_plot, quartile_parity_plot

    target, mask = ev.truth(split)
    mean = ev.methods[ev.name](split)
    return [
        quartile_parity_plot(
            mean, target, mask, out_dir / f"parity_quartiles_{split}.png", f"{ev.name}, {split}"
        ),
        error_profile_plot(
            {m: r[split] for m, r in results.items()}, out_dir / f"error_profile_{split}.png", split
        ),
    ]


def evaluate(cfg: DictConfig) -> dict:
    """DefectNet (one checkpoint or a deep ensemble) against the MLP baseline, NNLS unmixing
    and the training mean on test-ID and test-OOD; open-set identification and interval
    coverage; metrics.json, comparison.md and figures in the run folder."""
    log_once()
    ev = load_evaluation(cfg)
    cal = calibrate(ev)
    thresholds, open_threshold = cal["thresholds"], cal["open_threshold"]
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {m: {} for m in ev.methods}
    extra: dict = {
        "thresholds": thresholds,
        # what defectnet-predict needs to call presence as evaluated here (ship_model's card)
        "presence": {
            "spread_weight": ev.weight,
            "threshold": thresholds[ev.name],
            "open_set_threshold": open_threshold,
        },
        "open_set": {},
        "calibration": {},
        "predictions": {},
    }
    if len(ev.networks) > 1 and ev.has_val:
        extra["interval_scale"], extra["interval_floor"] = cal["scale"], cal["floor"]
    if cfg.presence.get("full_cells"):
        extra["full_cells"] = on_full_cells(ev, thresholds[ev.name])
        extra["presence"]["full_cells_threshold"] = extra["full_cells"]["threshold"]
    figures = []
    for split in (s for s in TEST_SPLITS if len(getattr(ev.dm.splits, s))):
        score_split(ev, split, cal, results, extra)
        figures += split_figures(ev, split, results, out_dir)
    extra["undoped_crystals"] = undoped_crystals(
        ev.networks, ev.dm, thresholds[ev.name], cfg.undoped_candidates, ev.weight
    )
    if cfg.get("open_set", True) and cal["levels"]:
        extra["undoped_open_set"] = undoped_open_set(
            ev.networks,
            ev.dm,
            open_threshold,
            ev.weight,
            cal["levels"],
            draws=int(cfg.presence.detection_draws),
            false_alarm=float(cfg.presence.false_alarm),
        )
    table = comparison_table(results)
    metrics = {
        "methods": results,
        **extra,
        "checkpoints": [str(p) for p in ev.paths],
        "ood_parents": ev.dm.splits.ood_parents,
        "figures": [f.name for f in figures],
    }
    write_json_atomic(out_dir / "metrics.json", metrics, indent=2)
    write_text_atomic(out_dir / "comparison.md", table + "\n")
    log_to_loggers(instantiate_all(cfg.get("logger")), results, figures)
    finish_wandb()
    log_summary(cfg, metrics, table, ev.name, out_dir)
    return metrics
