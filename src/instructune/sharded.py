"""After an FSDP fit the live model holds shards (each rank a slice of every flat parameter), so
generating on rank 0 alone would wait forever for the other ranks, and ``save_pretrained`` would save
slices. The full weights are gathered once, on every rank (a collective, ``state_dict_type: full``),
and loaded on rank 0 into a fresh, unsharded copy of the model that the tuned evaluation and the
export then use. Checked on the CPU with torch's FSDP over gloo (tests/test_trainer_configs.py);
Lightning's FSDP strategy itself needs CUDA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from omegaconf import DictConfig
from torch import nn

from instructune.config_check import ConfigError
from instructune.models.module import InstructionTuningModule


def _shards(name: str, stage: Any) -> bool:
    """FSDP and DeepSpeed ZeRO-3 split the parameters themselves; ZeRO-1/2 split only optimiser state and
    gradients, so every rank still holds the whole model."""
    return "FSDP" in name or ("DeepSpeed" in name and int(stage or 0) >= 3)


def is_sharded(trainer: L.Trainer) -> bool:
    """Whether parameters are split across ranks: no rank holds the whole model."""
    strategy = trainer.strategy
    stage = (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage")
    return _shards(type(strategy).__name__, stage)


def check_sharding(cfg: DictConfig) -> None:
    """Before anything is loaded: what a parameter-sharding strategy cannot do yet. Generating during
    training (eval.every_n_steps, eval.budgets) and restoring a checkpoint into the live model need the
    whole model in one process; ZeRO-3's trained weights are not gathered for evaluation and export."""
    strategy = cfg.trainer.get("strategy")
    if not isinstance(strategy, DictConfig):
        return
    name, stage = str(strategy.get("_target_", "")), strategy.get("stage")
    if not _shards(name, stage):
        return
    short = name.rsplit(".", 1)[-1]
    for key in ("every_n_steps", "budgets", "restore_best"):
        if cfg.eval.get(key):
            raise ConfigError(f"eval.{key} with {short}: generating or restoring during training needs the whole "
                              "model in one process, and this strategy shards it; use trainer=ddp (or drop the key)")
    if "DeepSpeed" in name and (cfg.eval.tuned or cfg.export):
        raise ConfigError(f"{short} ZeRO-3: the trained weights are not gathered for the tuned evaluation and the "
                          "export yet; use trainer=fsdp or trainer=deepspeed (ZeRO-2), or set eval.tuned=false "
                          "export=false")


def gathered_model(trainer: L.Trainer, fresh_model: Callable[[], nn.Module], architecture: str) -> nn.Module | None:
    """Rank 0: an unsharded model holding the fitted weights (``fresh_model`` builds base + strategy);
    other ranks (and unsharded runs): None. Every rank must call it, after fit."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy):
        return None  # every rank holds the whole model (ZeRO-3 is refused by check_sharding before training)
    state = trainer.strategy.lightning_module_state_dict()  # full weights on rank 0 (CPU), nothing elsewhere
    if trainer.global_rank != 0:
        return None
    model = fresh_model()
    InstructionTuningModule(model, architecture).load_state_dict(state, strict=True)
    return model


__all__ = ["is_sharded", "check_sharding", "gathered_model"]
