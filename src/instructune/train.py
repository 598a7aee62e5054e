"""One training run, from a composed Hydra config to a run folder, in named steps:

    build (tokenizer, data, model, strategy, optimizer: each from its config node) → validate →
    evaluate the base → apply the strategy → fit → evaluate the tuned model → export → summary.json

Everything is read from ``cfg`` here (mostly through ``hydra.utils.instantiate`` on ``_target_``
nodes) and passed down as objects or plain typed arguments; no module below this one sees the config.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from instructune.config_check import ConfigError, check_config
from instructune.data.datamodule import InstructionDataModule
from instructune.data.tokenizer import load_tokenizer
from instructune.env import configure_wandb_mode
from instructune.eval.split_evaluation import SplitEvaluation
from instructune.models.loading import count_parameters, load_model
from instructune.models.module import InstructionTuningModule, OptimizerConfig
from instructune.models.strategies import Strategy
from instructune.perf import ThroughputMeter
from instructune.report import format_run_table
from instructune.run_folder import RunFolder
from instructune.versions import package_versions

log = logging.getLogger(__name__)


def build(node: DictConfig | dict[str, Any], what: str, drop: tuple[str, ...] = (), **runtime: Any) -> Any:
    """Build a ``_target_`` node with ``hydra.utils.instantiate``; ``runtime`` objects (model, tokenizer,
    loggers) are passed to the constructor as they are, never copied into the config. Errors become one
    line naming the node. ``drop``: keys that label a node or feed interpolations, no arguments."""
    import inspect

    from hydra.errors import InstantiationException

    if drop:  # resolved first: the interpolations point outside the node
        node = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in drop}
    try:
        factory = instantiate(node, _partial_=True)
        inspect.signature(factory.func).bind(*factory.args, **{**factory.keywords, **runtime})
    except TypeError as e:  # a key the constructor does not take, or a missing one
        func = factory.func
        name = f"{func.__qualname__}.__init__" if isinstance(func, type) else func.__qualname__
        raise ConfigError(f"{what}: {name}() {e}") from None
    except InstantiationException as e:
        cause: BaseException = e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ValueError) and not isinstance(cause, InstantiationException):
            raise cause from None  # our own clear errors (DataError, ModelError) pass through
        raise ConfigError(f"{what}: {str(cause).splitlines()[0]}") from None
    return factory(**runtime)


def _is_rank_zero() -> bool:
    """Rank from the launcher's environment (Lightning's DDP children, SLURM, torchrun), known
    before the Trainer exists: only rank 0 evaluates and writes files."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def run(cfg: DictConfig, output_dir: Path, sweep_group: str | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; rank 0 always leaves ``summary.json`` (ok or failed)."""
    folder = RunFolder(output_dir)
    if not _is_rank_zero():
        return _train_and_evaluate(cfg, folder, sweep_group, rank_zero=False)
    folder.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    started = time.perf_counter()
    summary: dict[str, Any] = {"status": "running", "versions": package_versions()}
    try:
        check_config(cfg)
        summary["config"] = _config_digest(cfg)
        summary.update(_train_and_evaluate(cfg, folder, sweep_group))
        summary["status"] = "ok"
    except Exception as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
        raise
    finally:
        summary["wall_seconds"] = round(time.perf_counter() - started, 2)
        folder.write_summary(summary)
    return summary


def _config_digest(cfg: DictConfig) -> dict[str, Any]:
    """The few choices a sweep table is keyed by (the full resolved config sits in .hydra/)."""
    return {"model": cfg.model.name, "data": cfg.data.name, "peft": get_class(cfg.peft._target_).name,
            "masking": bool(cfg.masking), "seed": int(cfg.seed), "prompt_style": cfg.data.prompt.style}


@dataclass
class Parts:
    """Everything a run is made of, built from the config before any training."""

    tokenizer: Any
    data: InstructionDataModule
    model: nn.Module
    strategy: Strategy
    optimizer: OptimizerConfig
    evaluation: SplitEvaluation


def build_parts(cfg: DictConfig) -> Parts:
    """Tokenizer → data module (tokenised for fit) → base model → strategy → optimizer, each from its
    node; the checks that need no model run first, so a bad setting fails in seconds."""
    strategy: Strategy = build(cfg.peft, "peft")
    optimizer: OptimizerConfig = build(cfg.optimizer, "optimizer")
    validate(cfg, strategy, optimizer)
    optimizer = optimizer.with_default_lr(strategy.lr)
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.trust_remote_code)
    data: InstructionDataModule = build(cfg.data, "data", drop=("name", "path"), tokenizer=tokenizer)
    data.setup("fit")
    model = load_model(cfg.model.name_or_path, cfg.model.architecture, _container(cfg.model.from_config),
                       cfg.model.dtype, cfg.model.trust_remote_code)
    if cfg.model.get("gradient_checkpointing"):
        strategy.enable_gradient_checkpointing(model)
    evaluation = SplitEvaluation(data, tokenizer, cfg.model.architecture, cfg.eval.split, cfg.eval.max_examples,
                                 cfg.eval.max_new_tokens, cfg.eval.batch_size)
    return Parts(tokenizer, data, model, strategy, optimizer, evaluation)


def validate(cfg: DictConfig, strategy: Strategy, optimizer: OptimizerConfig) -> None:
    """Combinations no single node can reject on its own."""
    if optimizer.lr is None and strategy.lr is None:
        raise ConfigError(f"peft={strategy.name} has no default learning rate (peft.lr); set optimizer.lr")
    if cfg.data.packing and not strategy.supports_packing:
        # packed rows rely on restarting position ids (transformers' packed-sequence masks); virtual
        # tokens shift every position of a packed row
        raise ConfigError(f"data.packing=true cannot be combined with peft={strategy.name} (its virtual tokens "
                          "shift every position of a packed row): set data.packing=false")


def _train_and_evaluate(cfg: DictConfig, folder: RunFolder, sweep_group: str | None,
                        rank_zero: bool = True) -> dict[str, Any]:
    check_config(cfg)  # every setting, before anything is loaded
    ckpt_path = _checkpoint_to_resume(cfg.ckpt_path, folder)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    parts = build_parts(cfg)
    base_scores = parts.evaluation.run(parts.model, "base") if cfg.eval.base and rank_zero else None
    model = parts.strategy.apply(parts.model, cfg.model.architecture)
    model.train()  # from_pretrained and the base evaluation leave eval mode (dropout off)
    trainable, total = count_parameters(model)
    module: InstructionTuningModule = build(cfg.module, "module", model=model, optimizer=parts.optimizer)
    loggers = _loggers(cfg, folder.path, sweep_group)
    for lg in loggers:
        lg.log_hyperparams({"params/trainable": trainable, "params/total": total,
                            "optimizer/lr": parts.optimizer.effective_lr, **_config_digest(cfg)})
    meter = ThroughputMeter()
    trainer: L.Trainer = build(cfg.trainer, "trainer", logger=loggers or False, default_root_dir=str(folder.path),
                               callbacks=[meter, *_callbacks(cfg, folder)], **_checkpoint_io(cfg))
    fit_started = time.perf_counter()
    outcome = "failed"
    try:
        trainer.fit(module, datamodule=parts.data, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - fit_started
        if trainer.global_rank != 0:
            return {"rank": trainer.global_rank}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        # FLOPs are counted by re-running one step on rank 0 alone: safe when every rank holds the whole
        # model (one process, DDP), not when parameters are sharded (FSDP, DeepSpeed)
        throughput = meter.summary(module, count_flops=type(trainer.strategy).__name__ in
                                   ("SingleDeviceStrategy", "DDPStrategy"))
        tuned_scores = parts.evaluation.run(model, "tuned") if cfg.eval.tuned else None
        _log_scores(loggers, {"base": base_scores, "tuned": tuned_scores}, trainer.global_step)
        outcome = "success"
    finally:
        for lg in loggers:
            lg.finalize(outcome)
        _finish_wandb()
    parts.evaluation.write_predictions(folder.predictions)
    if cfg.export:
        meta = {"base_model": cfg.model.name_or_path, "architecture": cfg.model.architecture,
                "peft": parts.strategy.name, "adapter_only": parts.strategy.adapter_only}
        log.info("saved %s to %s", "adapter" if parts.strategy.adapter_only else "model",
                 folder.export(model, parts.tokenizer, parts.data.prompt_style, meta))
    result: dict[str, Any] = {
        "data": {split: len(examples) for split, examples in parts.data.examples.items()},
        "params": {"trainable": trainable, "total": total, "trainable_fraction": trainable / total},
        "lr": parts.optimizer.effective_lr,
        "steps": trainer.global_step,
        "fit_seconds": round(fit_seconds, 2),
        "throughput": throughput,
        "metrics": metrics,
        "eval": {"base": base_scores, "tuned": tuned_scores},
        "samples": parts.evaluation.samples(cfg.eval.samples),
        "model_dir": str(folder.model_dir) if cfg.export else None,
    }
    print(format_run_table(result))
    return result


def _checkpoint_to_resume(ckpt_path: str | None, folder: RunFolder) -> str | None:
    """``last`` is this run folder's newest checkpoint; a path must be a checkpoint file. Either
    missing is an error: a resume that silently started afresh would mislead."""
    import zipfile

    if ckpt_path is None:
        return None
    path = folder.checkpoints / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        where = f"{folder.checkpoints} has no last.ckpt" if ckpt_path == "last" else f"{path} does not exist"
        raise ConfigError(f"ckpt_path={ckpt_path}: {where}; nothing to resume (drop ckpt_path to start afresh)")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"ckpt_path={ckpt_path}: {path} is not a checkpoint (not written by torch.save)")
    return str(path)


def _callbacks(cfg: DictConfig, folder: RunFolder) -> list[Any]:
    """The checkpoint group's callback (writing to <run>/checkpoints), then ``callbacks.*``."""
    built = [build(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()
             if node is not None]
    if cfg.checkpoint.get("_target_"):
        built.insert(0, build(cfg.checkpoint, "checkpoint", dirpath=str(folder.checkpoints)))
    return built


def _checkpoint_io(cfg: DictConfig) -> dict[str, Any]:
    """Checkpoints are written atomically and loaded weights-only whenever there are any."""
    if not cfg.checkpoint.get("_target_"):
        return {"enable_checkpointing": False}
    from instructune.models.checkpoint_io import AtomicCheckpointIO

    return {"enable_checkpointing": True, "plugins": [AtomicCheckpointIO()]}


def _log_scores(loggers: list[Any], scores: dict[str, dict[str, Any] | None], step: int) -> None:
    flat = {f"eval/{who}/{k}": v for who, s in scores.items() if s for k, v in s.items() if isinstance(v, float)}
    if flat:
        for lg in loggers:
            lg.log_metrics(flat, step=step)


def _loggers(cfg: DictConfig, output_dir: Path, sweep_group: str | None) -> list[Any]:
    """Every ``logger.*`` node, saving under the run folder; W&B runs of one sweep share a group."""
    from lightning.pytorch.loggers import WandbLogger

    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        kwargs: dict[str, Any] = {"save_dir": str(output_dir)}
        if issubclass(get_class(node._target_), WandbLogger):
            if configure_wandb_mode() == "offline":
                log.info("W&B runs offline (no WANDB_API_KEY); sync later with: wandb sync %s/wandb/offline-run-*",
                         output_dir)
            kwargs["group"] = node.get("group") or sweep_group
        loggers.append(build(node, f"logger.{name}", **kwargs))
    return loggers


def _finish_wandb() -> None:
    """Close the W&B run even after a failure, so the next job of a sweep starts clean."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


__all__ = ["run", "build", "build_parts", "validate", "ConfigError"]
