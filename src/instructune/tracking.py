"""The run's trackers: the ``logger.*`` nodes (W&B, CSV) built under the run folder, the scores
logged at the end, and W&B closed after every job so a sweep's next job starts clean."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from instructune.instantiate import build

log = logging.getLogger(__name__)


def log_scores(loggers: list[Any], scores: dict[str, dict[str, Any] | None], step: int) -> None:
    flat = {f"eval/{who}/{k}": v for who, s in scores.items() if s for k, v in s.items() if isinstance(v, float)}
    if flat:
        for lg in loggers:
            lg.log_metrics(flat, step=step)


def uses_wandb(cfg: DictConfig) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return any(node is not None and issubclass(get_class(node._target_), WandbLogger)
               for node in (cfg.get("logger") or {}).values())


def build_loggers(cfg: DictConfig, output_dir: Path, sweep_group: str | None, wandb_mode: str | None) -> list[Any]:
    """Every ``logger.*`` node, saving under the run folder; W&B runs of one sweep share a group."""
    from lightning.pytorch.loggers import WandbLogger

    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        kwargs: dict[str, Any] = {"save_dir": str(output_dir)}
        if issubclass(get_class(node._target_), WandbLogger):
            if wandb_mode == "offline":
                log.info("W&B runs offline; sync later with: wandb sync %s/wandb/offline-run-*", output_dir)
            kwargs["group"] = node.get("group") or sweep_group
        loggers.append(build(node, f"logger.{name}", **kwargs))
    return loggers


def finish_wandb() -> None:
    """Close the W&B run even after a failure, so the next job of a sweep starts clean."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def progress_bar(enabled: bool) -> list[Any]:
    """Lightning's rich progress bar, less its ``Epoch 7/-2`` (it prints ``max_epochs - 1``, and a run
    bounded by ``max_steps`` has ``max_epochs=-1``): the epoch alone, the step count is on the bar."""
    if not enabled:
        return []
    from lightning.pytorch.callbacks import RichProgressBar

    class StepBoundedProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
                text = f"Epoch {current_epoch}"
                return f"{text:{len(self.validation_description)}}"
            return super()._get_train_description(current_epoch)

    return [StepBoundedProgressBar()]
