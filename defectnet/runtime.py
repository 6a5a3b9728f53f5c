"""What every Hydra-run command needs around its work: objects from config groups, and the end
of a W&B run."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_all(group: DictConfig | None) -> list:
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def finish_wandb() -> None:
    """End the W&B run so that jobs of a multirun stay separate runs."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
