"""After an FSDP fit the live model holds shards (each rank a slice of every flat parameter), so
generating on rank 0 alone would wait forever for the other ranks, and ``save_pretrained`` would save
slices. The full weights are gathered once, on every rank (a collective, ``state_dict_type: full``),
and loaded on rank 0 into a fresh, unsharded copy of the model that the tuned evaluation and the
export then use. Checked on the CPU with torch's FSDP over gloo (tests/test_trainer_configs.py);
Lightning's FSDP strategy itself needs CUDA."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch import nn

from instructune.models.module import InstructionTuningModule


def is_sharded(trainer: L.Trainer) -> bool:
    """Whether parameters are split across ranks (FSDP, DeepSpeed): no rank holds the whole model."""
    return type(trainer.strategy).__name__ not in ("SingleDeviceStrategy", "DDPStrategy")


def gathered_model(trainer: L.Trainer, fresh_model: Callable[[], nn.Module], architecture: str) -> nn.Module | None:
    """Rank 0: an unsharded model holding the fitted weights (``fresh_model`` builds base + strategy);
    other ranks (and unsharded runs): None. Every rank must call it, after fit."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy):
        if is_sharded(trainer):
            raise NotImplementedError(f"{type(trainer.strategy).__name__}: gathering the trained weights for the "
                                      "tuned evaluation and export is implemented for FSDP only; use trainer=fsdp")
        return None
    state = trainer.strategy.lightning_module_state_dict()  # full weights on rank 0 (CPU), nothing elsewhere
    if trainer.global_rank != 0:
        return None
    model = fresh_model()
    InstructionTuningModule(model, architecture).load_state_dict(state, strict=True)
    return model


__all__ = ["is_sharded", "gathered_model"]
