"""Training and evaluation runs, assembled from a Hydra config.

``train`` fits, tests on test-ID and test-OOD, compares with the training-mean baseline, writes
``metrics.json`` and parity plots into the run folder, and returns the metrics (the sweep
objective is ``cfg.optimized_metric``). Resume (``ckpt_path``: the same run continues) and
fine-tune (``init_from``: a new run starts from pretrained weights) are kept apart.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from defectnet.data.datamodule import PDoSDataModule
from defectnet.model.lit_module import TEST_SPLITS, DefectNetModule

log = logging.getLogger(__name__)


def load_weights(module: DefectNetModule, path: str) -> None:
    """Copy the network weights of a checkpoint into ``module`` (safe load, no pickle)."""
    ckpt = Path(path)
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"init_from: no checkpoint at '{ckpt}'; pass the .ckpt of a "
            "pretraining run (outputs/.../checkpoints/last.ckpt)."
        )
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if "state_dict" not in state:
        raise ValueError(
            f"init_from: '{ckpt}' is not a DefectNet Lightning checkpoint (no 'state_dict')."
        )
    weights = {
        k.removeprefix("model."): v
        for k, v in state["state_dict"].items()
        if k.startswith("model.")
    }
    try:
        module.model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ValueError(
            f"init_from: '{ckpt}' was trained with another architecture; use the "
            f"same model.* settings as that run ({exc})."
        ) from exc


def _instantiate_all(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


@torch.no_grad()
def predict_split(module: DefectNetModule, dm: PDoSDataModule, split: str) -> dict:
    """Predictions, targets and masks of one split, on CPU, outside the trainer."""
    module.eval()
    x, mask, target, *_ = dm.split_tensors(split)
    pred, _ = module.to("cpu")(x, mask)
    return {"pred": pred, "target": target, "mask": mask}


def masked_rmse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    return float(torch.sqrt(((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1)))


def baseline_rmse(dm: PDoSDataModule, split: str) -> float:
    """The trivial baseline: each candidate gets its mean training concentration."""
    _, mask, target, *_ = dm.split_tensors(split)
    return masked_rmse(dm.train_mean()[None].expand_as(target) * mask, target, mask)


def evaluate_splits(
    module: DefectNetModule, dm: PDoSDataModule, out_dir: Path | None, loggers=()
) -> dict:
    """RMSE of DefectNet and of the baseline per test split; parity plots when ``out_dir``."""
    from defectnet.plots import parity_plot

    dm.setup("test")  # under ddp_spawn the main process has not set the data up itself
    result = {}
    for split in TEST_SPLITS:
        if len(getattr(dm.splits, split)) == 0:
            continue
        p = predict_split(module, dm, split)
        result[split] = {
            "n_samples": int(p["mask"].shape[0]),
            "rmse": masked_rmse(p["pred"], p["target"], p["mask"]),
            "baseline_mean_rmse": baseline_rmse(dm, split),
        }
        if out_dir is not None:
            path = parity_plot(
                p["pred"],
                p["target"],
                p["mask"],
                out_dir / f"parity_{split}.png",
                title=f"{split}: RMSE {result[split]['rmse']:.4f}",
            )
            for lg in loggers:
                if hasattr(lg, "log_image"):
                    lg.log_image(key=f"{split}/parity", images=[str(path)])
    return result


def _finish_wandb() -> None:
    """End the W&B run so that jobs of a multirun stay separate runs."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def train(cfg: DictConfig) -> dict:
    """Fit, test, compare with the baseline; returns every metric as a float."""
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("ckpt_path") and cfg.get("init_from"):
        raise ValueError(
            "Set either ckpt_path= (resume this run) or init_from= (fine-tune from "
            "pretrained weights), not both."
        )
    dm: PDoSDataModule = instantiate(cfg.data)
    module: DefectNetModule = instantiate(cfg.model)
    if cfg.get("init_from"):
        load_weights(module, cfg.init_from)
        log.info("fine-tuning from %s", cfg.init_from)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test", True):
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            trainer.test(module, datamodule=dm, ckpt_path=best, weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            if trainer.is_global_zero:
                if best:
                    load_weights(module, best)
                metrics["comparison"] = evaluate_splits(module, dm, out_dir, loggers)
        if trainer.is_global_zero:
            dm.setup("test")
            metrics["ood_parents"] = dm.splits.ood_parents
            for split, c in metrics.get("comparison", {}).items():
                log.info(
                    "%-8s %3d samples  DefectNet RMSE %.4f  training-mean baseline %.4f",
                    split,
                    c["n_samples"],
                    c["rmse"],
                    c["baseline_mean_rmse"],
                )
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
            log.info("metrics written to %s", out_dir / "metrics.json")
    finally:
        _finish_wandb()
    return metrics


def _check_split(paths, dm: PDoSDataModule) -> None:
    """Refuse checkpoints whose training held out other parents than this evaluation tests."""
    from defectnet.model.checkpoint import checkpoint_data

    for path in paths:
        held = checkpoint_data(path).get("ood_parents")
        if held is not None and sorted(held) != sorted(dm.splits.ood_parents):
            raise ValueError(
                f"{path}: trained with test-OOD parents {held}, this data config holds out "
                f"{dm.splits.ood_parents}; evaluate with the data settings of training "
                "(data.seed, data.ood_parents, data.path)."
            )


def evaluate(cfg: DictConfig) -> dict:
    """DefectNet (one checkpoint or a deep ensemble) against the MLP baseline, NNLS unmixing
    and the training mean on test-ID and test-OOD; open-set identification and interval
    coverage; metrics.json, comparison.md and figures in the run folder."""
    import numpy as np

    from defectnet import evaluation as ev
    from defectnet.plots import error_profile_plot, quartile_parity_plot
    from defectnet.predict import load_ensemble

    dm: PDoSDataModule = instantiate(cfg.data)
    dm.setup("test")
    networks, grid, threshold, paths = load_ensemble(cfg.ckpt_path)
    if grid != dm.dataset.grid:
        raise ValueError(
            f"ckpt_path: trained on grid {grid}, the data set {dm.path} is on {dm.dataset.grid}."
        )
    _check_split(paths, dm)
    mlp = load_ensemble(cfg.mlp_ckpt) if cfg.get("mlp_ckpt") else None
    if mlp is not None:
        _check_split(mlp[3], dm)
    references = ev.load_references(cfg.references) if cfg.get("references") else None
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loggers = _instantiate_all(cfg.get("logger"))
    name = "DefectNet" if len(networks) == 1 else f"DefectNet (ensemble of {len(networks)})"
    results: dict = {name: {}, "MLP": {}, "NNLS": {}, "training mean": {}}
    extra: dict = {"open_set": {}, "calibration": {}, "predictions": {}}
    figures = []
    for split in TEST_SPLITS:
        if len(getattr(dm.splits, split)) == 0:
            continue
        _, mask, target, *_ = (t.numpy() for t in dm.split_tensors(split))
        members, _ = ev.network_members(networks, dm, split)
        mean = members.mean(0)
        results[name][split] = ev.split_metrics(mean, target, mask, threshold)
        extra["predictions"][split] = ev.per_sample_table(dm, split, mean)
        if mlp is not None:
            results["MLP"][split] = ev.split_metrics(
                ev.network_members(mlp[0], dm, split)[0].mean(0), target, mask, threshold
            )
        if references is not None:
            results["NNLS"][split] = ev.split_metrics(
                ev.nnls_predict(dm, split, references), target, mask, threshold
            )
        results["training mean"][split] = ev.split_metrics(
            ev.train_mean_predict(dm, split), target, mask, threshold
        )
        if len(networks) > 1:
            from defectnet.predict import EnsemblePrediction

            ens = EnsemblePrediction(mean, members.std(0, ddof=1), members, np.empty(0))
            low, high = ens.interval(float(cfg.interval))
            extra["calibration"][split] = {
                "interval": float(cfg.interval),
                **ev.coverage(low, high, target, mask),
            }
        if cfg.get("open_set", True):
            open_members, open_mask = ev.network_members(networks, dm, split, open_set=True)
            m = ev.split_metrics(open_members.mean(0), target, open_mask, threshold)
            g = results[name][split]
            extra["open_set"][split] = {
                "threshold": threshold,
                "open_precision": m["precision"],
                "open_recall": m["recall"],
                "open_f1": m["f1"],
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
                {k: v[split] for k, v in results.items() if split in v},
                out_dir / f"error_profile_{split}.png",
                split,
            )
        )
    results = {k: v for k, v in results.items() if v}
    table = ev.comparison_table(results)
    metrics = {
        "methods": results,
        **extra,
        "checkpoints": [str(p) for p in paths],
        "ood_parents": dm.splits.ood_parents,
        "figures": [str(f) for f in figures],
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "comparison.md").write_text(table + "\n")
    for lg in loggers:
        if hasattr(lg, "log_image"):
            for f in figures:
                lg.log_image(key=f.stem, images=[str(f)])
        lg.log_metrics(
            {
                f"{m}/{s}/{k}": v
                for m, d in results.items()
                for s, r in d.items()
                for k, v in r.items()
            }
        )
    _finish_wandb()
    log.info("\n%s", table)
    for split, o in extra["open_set"].items():
        log.info(
            "%s open set: precision %.2f recall %.2f (guided: %.2f / %.2f) at threshold %.3g",
            split,
            o["open_precision"],
            o["open_recall"],
            o["guided_precision"],
            o["guided_recall"],
            threshold,
        )
    for split, c in extra["calibration"].items():
        log.info(
            "%s: %.0f %% intervals hold %.0f %% of candidates, %.0f %% of present dopants",
            split,
            100 * c["interval"],
            100 * c["coverage_candidates"],
            100 * c["coverage_present"],
        )
    return metrics
