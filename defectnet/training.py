"""Training runs, assembled from a Hydra config (evaluation of checkpoints: ``evaluation``).

``train`` fits, tests on test-ID and test-OOD, compares with the training-mean baseline, writes
``metrics.json`` and parity plots into the run folder, and returns the metrics (the sweep
objective is ``cfg.optimized_metric``). Resume (``ckpt_path``: the same run continues) and
fine-tune (``init_from``: a new run whose network is built from a checkpoint) are kept apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from defectnet.atomic import write_json_atomic
from defectnet.data.datamodule import TEST_SPLITS, PDoSDataModule
from defectnet.errors import UserError, instantiate_checked
from defectnet.metrics import masked_rmse
from defectnet.model.checkpoint import entry_thresholds, network_from_checkpoint
from defectnet.model.lit_module import DefectNetModule
from defectnet.model.pretrained import member_for_seed
from defectnet.report import comparison_table
from defectnet.runtime import finish_wandb, instantiate_all, log_once

log = logging.getLogger(__name__)


def build_from_checkpoint(cfg: DictConfig) -> None:
    """``init_from=<ckpt>``: the network is built from that checkpoint (its class, shape and
    weights; ``model.checkpoint.network_from_checkpoint``); optimizer, scheduler and freezing
    stay as configured. A folder of shipped members (``${defectnet_pretrained:}``) gives member
    ``seed mod M``, so each member of a fine-tuned ensemble starts from its own."""
    path = Path(cfg.init_from)
    if path.is_dir():
        path = member_for_seed(path, int(cfg.get("seed") or 0))
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from: no checkpoint at '{path}'; pass the .ckpt of a pretraining run "
            "(outputs/.../checkpoints/best_epoch_*.ckpt) or ${defectnet_pretrained:}."
        )
    with open_dict(cfg):
        cfg.model.model = {
            "_target_": "defectnet.model.checkpoint.network_from_checkpoint",
            "path": str(path),
        }
    log.info("fine-tuning from %s", path)


def methods_of(module: DefectNetModule, dm: PDoSDataModule) -> dict[str, Callable]:
    """The trained network and what it is compared with (``evaluation.baseline_methods``), as
    functions of a split, answered on CPU outside the trainer."""
    from defectnet.data.references import load_references
    from defectnet.evaluation import baseline_methods, cached_by_split

    @torch.no_grad()
    def defectnet(split: str) -> np.ndarray:
        module.eval()
        batch = dm.split_tensors(split)
        pred, _ = module.to("cpu")(batch.inputs(), batch.candidates, batch.references)
        return pred.numpy()

    refs = load_references(dm.references_dir) if dm.references_dir else None
    methods = {"DefectNet": cached_by_split(defectnet)}
    for name, method in baseline_methods(dm, refs).items():
        methods["NNLS, two-point" if name == "NNLS" else name] = method
    return methods


def evaluate_splits(
    methods: dict[str, Callable], dm: PDoSDataModule, out_dir: Path | None, loggers=()
) -> dict:
    """RMSE of DefectNet and of the training mean per test split; parity plots when
    ``out_dir``."""
    from defectnet.evaluation import split_truth
    from defectnet.plots import parity_plot

    result = {}
    for split in TEST_SPLITS:
        if len(getattr(dm.splits, split)) == 0:
            continue
        target, mask = (torch.from_numpy(a) for a in split_truth(dm, split))
        pred = torch.from_numpy(methods["DefectNet"](split))
        mean = torch.from_numpy(methods["training mean"](split))
        result[split] = {
            "n_samples": int(mask.shape[0]),
            "rmse": masked_rmse(pred, target, mask),
            "baseline_mean_rmse": masked_rmse(mean, target, mask),
        }
        if out_dir is not None:
            path = parity_plot(
                pred,
                target,
                mask,
                out_dir / f"parity_{split}.png",
                title=f"{split}: RMSE {result[split]['rmse']:.4f}",
            )
            for lg in loggers:
                if hasattr(lg, "log_image"):
                    lg.log_image(key=f"{split}/parity", images=[str(path)])
    return result


def compare_methods(methods: dict[str, Callable], dm: PDoSDataModule, threshold, max_fpr) -> dict:
    """Every method at its own val threshold (best F1 at the distractor FPR bound; DefectNet
    at ``threshold`` when given): ``split_metrics`` of each on each test split."""
    from defectnet.evaluation import split_truth
    from defectnet.metrics import best_threshold, split_metrics

    thresholds = {
        m: best_threshold(f("val"), *split_truth(dm, "val"), max_fpr) for m, f in methods.items()
    }
    if threshold is not None:
        thresholds["DefectNet"] = float(threshold)
    results: dict = {m: {} for m in methods}
    for split in TEST_SPLITS:
        if len(getattr(dm.splits, split)):
            for m, f in methods.items():
                results[m][split] = split_metrics(f(split), *split_truth(dm, split), thresholds[m])
    return results


def next_steps(cfg: DictConfig, out_dir: Path) -> str:
    """What to do with the run: predict with its checkpoint on the shipped example."""
    import json

    example = Path(cfg.paths.root_dir) / "examples"
    truth = example / "truth.json"
    known = json.loads(truth.read_text()) if truth.is_file() else {}
    host = known.get("host", "<host formula>")
    offered = f" 'candidates=[{','.join(known['offered'])}]'" if known.get("offered") else ""
    refs = f" references={example / 'references'}" if cfg.data.get("references") else ""
    return (
        f"predict with this run's model:\n  defectnet-predict ckpt_path={out_dir} "
        f"doped={example / 'doped.txt'} pristine={example / 'pristine.txt'} host={host}"
        f"{offered}{refs}"
        f"\n  (the true dopants: {truth})"
    )


def test_table(metrics: dict) -> str:
    """One row per metric, one column per test split that was tested."""
    splits = [s for s in TEST_SPLITS if any(k.startswith(f"{s}/") for k in metrics)]
    names = sorted({k.split("/", 1)[1] for k in metrics if k.split("/", 1)[0] in splits})
    lines = [f"{'metric':<16}" + "".join(f"{s:>12}" for s in splits)]
    for name in names:
        cells = [metrics.get(f"{s}/{name}") for s in splits]
        lines.append(
            f"{name:<16}" + "".join(f"{c:>12.4f}" if c is not None else f"{'—':>12}" for c in cells)
        )
    return "\n".join(lines)


def check_settings(cfg: DictConfig) -> None:
    """Settings refused before the data is loaded or a step is taken: batch size, optimizer
    numbers, and the checkpoint a run resumes from."""
    from defectnet.model.checkpoint import read_checkpoint

    size = cfg.data.get("batch_size")
    if not isinstance(size, int) or size < 1:
        raise UserError(f"data.batch_size={size}: a whole number of samples, 1 or more.")
    optimizer = cfg.model.get("optimizer") or {}
    for key in ("lr", "weight_decay"):
        value = optimizer.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UserError(f"model.optimizer.{key}={value}: a number ≥ 0 (e.g. 1e-4).")
    if optimizer.get("lr") == 0:
        raise UserError("model.optimizer.lr=0: the network would not learn; e.g. 1e-4.")
    if cfg.get("ckpt_path"):
        ckpt = read_checkpoint(cfg.ckpt_path)
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "defectnet" not in ckpt:
            raise UserError(
                f"ckpt_path={cfg.ckpt_path}: not a DefectNet training checkpoint; resume from "
                "a run's outputs/.../checkpoints/last.ckpt."
            )


def train(cfg: DictConfig) -> dict:
    """Fit, test, compare with the baseline; returns every metric as a float."""
    log_once()
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("ckpt_path") and cfg.get("init_from"):
        raise UserError(
            "Set either ckpt_path= (resume this run) or init_from= (fine-tune from "
            "pretrained weights), not both."
        )
    check_settings(cfg)
    dm: PDoSDataModule = instantiate(cfg.data)
    if cfg.get("init_from"):
        build_from_checkpoint(cfg)
    module: DefectNetModule = instantiate_checked(cfg.model)
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test", True):
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
            # Lightning's own table repeats every metric under each test dataloader
            trainer.test(module, datamodule=dm, ckpt_path=best, weights_only=True, verbose=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            if trainer.is_global_zero:
                log.info("test metrics:\n%s", test_table(metrics))
            if trainer.is_global_zero:
                if best:  # test and compare the best epoch's network
                    module.model = network_from_checkpoint(best)
                dm.setup("test")  # under ddp_spawn the main process has not set it up itself
                methods = methods_of(module, dm)
                metrics["comparison"] = evaluate_splits(methods, dm, out_dir, loggers)
                if best and len(dm.splits.val):
                    entry = torch.load(best, map_location="cpu", weights_only=True)["defectnet"]
                    thresholds = entry_thresholds(entry)
                    metrics["thresholds"] = vars(thresholds)
                    log.info("presence thresholds of %s (best F1 on val): %s", best, thresholds)
        if trainer.is_global_zero:
            dm.setup("test")
            metrics["ood_parents"] = dm.splits.ood_parents
            if cfg.get("test", True) and len(dm.splits.val):
                threshold = metrics.get("thresholds", {}).get("guided")
                fpr = cfg.get("presence", {}).get("max_distractor_fpr")
                metrics["methods"] = compare_methods(methods, dm, threshold, fpr)
                log.info(
                    "test splits, every method at its val threshold:\n%s",
                    comparison_table(metrics["methods"]),
                )
            write_json_atomic(out_dir / "metrics.json", metrics, indent=2)
            log.info("metrics written to %s", out_dir / "metrics.json")
            log.info("%s", next_steps(cfg, out_dir))
    finally:
        finish_wandb()
    return metrics
