"""Checkpoints: written atomically, read without unpickling arbitrary objects, taken where a
resumed run continues exactly as an uninterrupted one would."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, fsync, then rename over the target: a run
    killed mid-write leaves the previous checkpoint intact, never a truncated one. Loading uses
    ``weights_only=True`` (tensors and plain containers only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class EpochEndCheckpoint(ModelCheckpoint):
    """Save after the last optimiser step of every ``every_n_epochs``-th epoch, from the batch-end hook.

    Lightning resumes a checkpoint taken there at the start of the next epoch, where the epoch-seeded
    sampler gives the same order as an uninterrupted run; a checkpoint taken in the epoch-end hook
    instead resumes with the epoch's batch counter half-restored (one batch of the new epoch, then
    the next epoch). Steps per epoch are known only once the trainer has its data.
    """

    def __init__(self, every_n_epochs: int = 1, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=None, every_n_epochs=0, save_on_train_epoch_end=False, **kwargs)
        self.n_epochs = every_n_epochs

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        self._every_n_train_steps = max(steps_per_epoch * self.n_epochs, 1)
        super().on_train_start(trainer, pl_module)
