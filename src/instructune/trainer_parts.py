"""The Trainer's config-built companions: the checkpoint callback and ``callbacks.*``, the checkpoint IO
plugin, and the checkpoint a run resumes from (``ckpt_path``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from instructune.config_check import ConfigError
from instructune.instantiate import build
from instructune.run_folder import RunFolder


def checkpoint_to_resume(ckpt_path: str | None, folder: RunFolder) -> str | None:
    """``last`` is this run folder's newest checkpoint; a path must be a checkpoint file. Either
    missing is an error: a resume that silently started afresh would mislead."""
    import zipfile

    if ckpt_path is None:
        return None
    path = folder.checkpoints / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.exists():
        where = f"{folder.checkpoints} has no last.ckpt" if ckpt_path == "last" else f"{path} does not exist"
        raise ConfigError(f"ckpt_path={ckpt_path}: {where}; nothing to resume (drop ckpt_path to start afresh)")
    if path.is_file() and not zipfile.is_zipfile(path):  # (a DeepSpeed checkpoint is a folder)
        raise ConfigError(f"ckpt_path={ckpt_path}: {path} is not a checkpoint (not written by torch.save)")
    return str(path)


def callbacks_from_config(cfg: DictConfig, folder: RunFolder) -> list[Any]:
    """The checkpoint group's callback (writing to <run>/checkpoints), then ``callbacks.*``."""
    built = [build(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()
             if node is not None]
    if cfg.checkpoint.get("_target_"):
        built.insert(0, build(cfg.checkpoint, "checkpoint", dirpath=str(folder.checkpoints)))
    return built


def checkpoint_plugins(cfg: DictConfig) -> dict[str, Any]:
    """Checkpoints are written atomically and loaded weights-only whenever there are any."""
    if not cfg.checkpoint.get("_target_"):
        return {"enable_checkpointing": False}
    from instructune.models.checkpoint_io import AtomicCheckpointIO

    return {"enable_checkpointing": True, "plugins": [AtomicCheckpointIO()]}


class LastValidation(L.Callback):
    """The step of the last validation during fit: a run whose last step was not validated (fewer steps
    than ``val_check_interval``, or not a multiple of it) gets one more validation at the end."""

    step = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.step = trainer.global_step


def back_on_device(model: Any, trainer: L.Trainer) -> Any:
    """Lightning's teardown moves the module back to the CPU after fit; the tuned evaluation generates
    hundreds of answers, so it runs where training ran (4-bit models are not moved: bitsandbytes places them)."""
    device = trainer.strategy.root_device
    if device.type != "cpu" and not getattr(model, "is_loaded_in_4bit", False):
        model.to(device)
    return model


__all__ = ["back_on_device", "checkpoint_to_resume", "callbacks_from_config", "checkpoint_plugins", "LastValidation"]
