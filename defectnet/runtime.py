"""What every Hydra-run command needs around its work: one log line per message, objects from
config groups, and the end of a W&B run."""

from __future__ import annotations

import logging

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


def log_once() -> None:
    """Let Lightning's messages reach only the handlers Hydra set up (console and the run's
    log file). Importing Lightning adds a console handler of its own, which printed every
    Lightning line twice, once plain and once timestamped."""
    if not logging.getLogger().handlers:
        return  # not under Hydra: Lightning's own handler is the only one
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
