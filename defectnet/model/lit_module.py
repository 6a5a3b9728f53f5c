"""LightningModule: DefectNet trained with a masked loss (MSE by default) on the candidate
entries only."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch import nn

from defectnet.data.datamodule import TEST_SPLITS, Batch
from defectnet.errors import UserError
from defectnet.metrics import LOSSES, SplitMetrics
from defectnet.model.checkpoint import (
    Thresholds,
    checkpoint_entry,
    entry_thresholds,
    spectrum_recipe,
)


class DefectNetModule(L.LightningModule):
    """Wraps ``DefectNet``; the optimizer and scheduler are partial configs built here."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        threshold: float = 0.005,
        freeze_encoder: bool = False,
        loss: str = "squared",
    ):
        super().__init__()
        # Only plain values go into checkpoints, so they load with weights_only=True.
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.threshold = threshold
        if loss not in LOSSES:
            raise UserError(f"model.loss='{loss}': choose one of {', '.join(LOSSES)}.")
        self.loss = LOSSES[loss]
        # written into every checkpoint; the PresenceThresholds callback sets them from val
        self.thresholds = Thresholds(threshold, threshold)
        self.val_metrics = SplitMetrics(threshold)
        self.test_metrics = nn.ModuleDict({s: SplitMetrics(threshold) for s in TEST_SPLITS})
        self.tested: set[str] = set()  # splits that had at least one batch
        if freeze_encoder:
            for p in self.model.encoder.parameters():
                p.requires_grad_(False)

    def forward(self, spectra, candidates, references=None):
        return self.model(spectra, candidates, references)

    def _step(self, batch: Batch):
        pred, attention = self(batch.inputs(), batch.candidates, batch.references)
        loss = self.loss(pred, batch.targets, batch.candidates)
        return pred, loss, batch.candidates, batch.targets, batch.n_dopants, attention

    def training_step(self, batch, batch_idx):
        _, loss, *_ = self._step(batch)
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch.targets.shape[0],
            sync_dist=True,
        )
        return loss

    def validation_step(self, batch, batch_idx):
        pred, loss, mask, target, n_dop, _ = self._step(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch.targets.shape[0], sync_dist=True)
        self.val_metrics.update(pred, target, mask, n_dop)

    def on_validation_epoch_start(self):
        # the thresholds chosen at the previous validation: F1 and FPR at a threshold that moves
        # with the weights rather than a fixed one (this epoch's own are chosen after it)
        self.val_metrics.threshold = self.thresholds.guided

    def on_validation_epoch_end(self):
        values = self.val_metrics.compute()
        self.log_dict({f"val/{k}": v for k, v in values.items()}, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = TEST_SPLITS[dataloader_idx]
        pred, loss, mask, target, n_dop, _ = self._step(batch)
        self.test_metrics[split].update(pred, target, mask, n_dop)
        self.tested.add(split)

    def on_test_epoch_start(self):
        self.tested = set()
        for metrics in self.test_metrics.values():  # the tested weights' own thresholds
            metrics.threshold = self.thresholds.guided

    def on_test_epoch_end(self):
        for split, metrics in self.test_metrics.items():
            if split not in self.tested:
                continue
            values = metrics.compute()
            self.log_dict(
                {f"{split}/{k}": v for k, v in values.items()},
                add_dataloader_idx=False,
                sync_dist=True,
            )
            metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record what prediction needs to rebuild the network (model.checkpoint)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        dataset = getattr(dm, "dataset", None)
        splits = getattr(dm, "splits", None)
        data = {
            "path": str(getattr(dm, "path", "")),
            "split_seed": getattr(dm, "seed", None),
            "ood_parents": list(splits.ood_parents) if splits is not None else None,
            "references": getattr(dm, "references_dir", None),
        }
        recipe = spectrum_recipe(dataset.grid, dataset.meta) if dataset is not None else None
        checkpoint["defectnet"] = checkpoint_entry(
            self.model, dataset.grid if dataset is not None else None, self.thresholds, data, recipe
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Testing ``ckpt_path=best`` restores the thresholds saved with those weights."""
        if "defectnet" in checkpoint:
            self.thresholds = entry_thresholds(checkpoint["defectnet"])

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"},
        }
