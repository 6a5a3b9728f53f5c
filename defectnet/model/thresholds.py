"""Presence thresholds chosen on the validation split whenever the model is validated.

Runs before the checkpoint callbacks (Lightning orders those last), so every checkpoint is
saved with the thresholds of the very weights it holds: nothing is rewritten after training.
"""

from __future__ import annotations

import lightning as L
import torch

from defectnet.data.datamodule import open_set_mask
from defectnet.metrics import best_threshold
from defectnet.model.checkpoint import Thresholds


@torch.no_grad()
def validation_thresholds(
    network: torch.nn.Module, datamodule, max_fpr: float | None = None
) -> Thresholds:
    """The thresholds with the best element F1 on the validation split that call at most
    ``max_fpr`` of the absent candidates present: with the data's candidates, and with every
    non-host element offered (prediction's open set)."""
    batch = datamodule.split_tensors("val")
    target = batch.targets.numpy()
    x = batch.inputs().to(next(network.parameters()).device)
    refs = batch.references.to(x.device) if batch.references is not None else None
    chosen = []
    for mask in (batch.candidates, open_set_mask(batch.composition)):
        pred = network(x, mask.to(x.device), refs)[0].cpu().numpy()
        chosen.append(best_threshold(pred, target, mask.numpy(), max_fpr))
    return Thresholds(*chosen)


class PresenceThresholds(L.Callback):
    """Sets ``module.thresholds`` from the validation split after each validation."""

    def __init__(self, max_distractor_fpr: float | None = None):
        self.max_distractor_fpr = max_distractor_fpr

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if trainer.sanity_checking or dm is None or not len(dm.splits.val):
            return
        was_training = pl_module.model.training
        pl_module.model.eval()
        pl_module.thresholds = validation_thresholds(pl_module.model, dm, self.max_distractor_fpr)
        pl_module.model.train(was_training)
