"""One training run, from a composed Hydra config to a run folder:

    load tokenizer + model → data module → evaluate the base → apply the strategy → fit →
    evaluate the tuned model → export (adapter or full model, tokenizer, prompt style) → summary.json

Everything is read from ``cfg`` here and passed down as plain typed arguments; no module below
this one sees the config object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from instructune.data.datamodule import InstructionDataModule
from instructune.data.tokenizer import load_tokenizer
from instructune.env import configure_wandb_mode, redact
from instructune.eval.split_evaluation import SplitEvaluation
from instructune.models.loading import count_parameters, load_model
from instructune.models.module import InstructionTuningModule, OptimizerConfig
from instructune.models.strategies import Strategy
from instructune.perf import ThroughputMeter
from instructune.report import format_run_table
from instructune.versions import package_versions

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
RESOLVED_CONFIG_FILE = "config.yaml"
PREDICTIONS_FILE = "predictions.jsonl"
MODEL_DIR = "model"


class ConfigError(ValueError):
    """A config node that cannot be built (unknown option, wrong type); the message names the node."""


def _build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with its wrapped exception turned into one line naming the node."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause: BaseException = e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ValueError) and not isinstance(cause, InstantiationException):
            raise cause from None  # our own clear errors (DataError, ModelError) pass through
        raise ConfigError(f"{what}: {str(cause).splitlines()[0]}") from None


def _is_rank_zero() -> bool:
    """Rank from the launcher's environment (Lightning's DDP children, SLURM, torchrun), known
    before the Trainer exists: only rank 0 evaluates and writes files."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def run(cfg: DictConfig, output_dir: Path, sweep_group: str | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; rank 0 always leaves ``summary.json`` (ok or failed)."""
    if not _is_rank_zero():
        return _run(cfg, output_dir, sweep_group, rank_zero=False)
    output_dir.mkdir(parents=True, exist_ok=True)
    # A run resumed in an existing folder keeps the files of the attempt before it until it succeeds.
    earlier = {name: (output_dir / name).exists() for name in (RESOLVED_CONFIG_FILE, SUMMARY_FILE)}
    config_file = "config.resumed.yaml" if earlier[RESOLVED_CONFIG_FILE] else RESOLVED_CONFIG_FILE
    (output_dir / config_file).write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
    started = time.perf_counter()
    summary: dict[str, Any] = {"status": "running", "config": _config_digest(cfg), "versions": package_versions()}
    try:
        summary.update(_run(cfg, output_dir, sweep_group))
        summary["status"] = "ok"
    except Exception as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
        raise
    finally:
        summary["wall_seconds"] = round(time.perf_counter() - started, 2)
        name = "summary.failed.json" if summary["status"] != "ok" and earlier[SUMMARY_FILE] else SUMMARY_FILE
        (output_dir / name).write_text(redact(json.dumps(summary, indent=2, default=str)) + "\n")
    return summary


def _config_digest(cfg: DictConfig) -> dict[str, Any]:
    """The few choices a sweep table is keyed by (the full resolved config sits in .hydra/)."""
    return {"model": cfg.model.name, "data": cfg.data.name, "peft": get_class(cfg.peft._target_).name,
            "masking": bool(cfg.masking), "seed": int(cfg.seed), "prompt_style": cfg.data.prompt.style}


def _run(cfg: DictConfig, output_dir: Path, sweep_group: str | None, rank_zero: bool = True) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    architecture = cfg.model.architecture
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.trust_remote_code)
    data = InstructionDataModule(
        source=_build(cfg.data.source, "data.source"),
        tokenizer=tokenizer,
        prompt=OmegaConf.to_container(cfg.data.prompt, resolve=True),  # type: ignore[arg-type]
        masking=cfg.masking,
        architecture=architecture,
        max_seq_length=cfg.data.max_seq_length,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        pad_to_multiple_of=cfg.data.pad_to_multiple_of,
        seed=cfg.seed,
        group_by_length=cfg.data.group_by_length,
        packing=cfg.data.packing,
        accumulate_grad_batches=cfg.trainer.get("accumulate_grad_batches") or 1,
        cache=cfg.data.cache,
    )
    data.setup("fit")
    model = load_model(cfg.model.name_or_path, architecture, _container(cfg.model.from_config), cfg.model.dtype,
                       cfg.model.trust_remote_code)
    strategy: Strategy = _build(cfg.peft, "peft")
    lr = cfg.optimizer.lr if cfg.optimizer.lr is not None else strategy.lr
    if lr is None:  # checked before the base evaluation, which can take long on a real model
        raise ConfigError(f"peft={strategy.name} has no default learning rate (peft.lr); set optimizer.lr")
    if cfg.model.get("gradient_checkpointing"):
        strategy.enable_gradient_checkpointing(model)
    evaluation = SplitEvaluation(data, tokenizer, architecture, cfg.eval.split, cfg.eval.max_examples,
                                     cfg.eval.max_new_tokens, cfg.eval.batch_size)
    base_scores = evaluation.run(model, "base") if cfg.eval.base and rank_zero else None

    if cfg.data.packing:
        _check_packing(strategy)
    model = strategy.apply(model, architecture)
    model.train()  # from_pretrained and the base evaluation leave eval mode (dropout off)
    trainable, total = count_parameters(model)
    lr *= cfg.optimizer.get("lr_scale", 1.0)
    optim = OptimizerConfig(lr=lr, weight_decay=cfg.optimizer.weight_decay, warmup_ratio=cfg.optimizer.warmup_ratio,
                            schedule=cfg.optimizer.schedule)
    module = InstructionTuningModule(model, architecture, optim)
    loggers = _loggers(cfg, output_dir, sweep_group)
    for lg in loggers:
        lg.log_hyperparams({"params/trainable": trainable, "params/total": total, "optimizer/lr": lr,
                            **_config_digest(cfg)})
    meter = ThroughputMeter()
    checkpointing = _checkpointing(cfg.checkpoint, output_dir)
    callbacks = [meter, *checkpointing.pop("callbacks", [])]
    trainer: L.Trainer = _build(cfg.trainer, "trainer", logger=loggers or False, default_root_dir=str(output_dir),
                                callbacks=callbacks, **checkpointing)
    fit_started = time.perf_counter()
    outcome = "failed"
    try:
        trainer.fit(module, datamodule=data, ckpt_path=cfg.ckpt_path)
        fit_seconds = time.perf_counter() - fit_started
        if trainer.global_rank != 0:
            return {"rank": trainer.global_rank}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
        # FLOPs are counted by re-running one step on rank 0 alone: safe when every rank holds the whole
        # model (one process, DDP), not when parameters are sharded (FSDP, DeepSpeed)
        throughput = meter.summary(module, count_flops=type(trainer.strategy).__name__ in
                                   ("SingleDeviceStrategy", "DDPStrategy"))
        tuned_scores = evaluation.run(model, "tuned") if cfg.eval.tuned else None
        if base_scores is not None or tuned_scores is not None:
            scores = {k: v for k, v in (("base", base_scores), ("tuned", tuned_scores)) if v is not None}
            for lg in loggers:
                lg.log_metrics({f"eval/{who}/{k}": v for who, s in scores.items() for k, v in s.items()
                                if isinstance(v, float)}, step=trainer.global_step)
        outcome = "success"
    finally:
        for lg in loggers:
            lg.finalize(outcome)
        _finish_wandb()
    evaluation.write_predictions(output_dir / PREDICTIONS_FILE)
    export_dir = output_dir / MODEL_DIR
    if cfg.export:
        _export(model, tokenizer, data, strategy, cfg, export_dir)
    result: dict[str, Any] = {
        "data": {split: len(examples) for split, examples in data.examples.items()},
        "params": {"trainable": trainable, "total": total, "trainable_fraction": trainable / total},
        "lr": lr,
        "steps": trainer.global_step,
        "fit_seconds": round(fit_seconds, 2),
        "throughput": throughput,
        "metrics": metrics,
        "eval": {"base": base_scores, "tuned": tuned_scores},
        "samples": evaluation.samples(cfg.eval.samples),
        "model_dir": str(export_dir) if cfg.export else None,
    }
    print(format_run_table(result))
    return result


def _check_packing(strategy: Strategy) -> None:
    """Packed rows rely on transformers building a block-diagonal mask from restarting position ids
    (``masking_utils.find_packed_sequence_indices``, transformers 5); without it documents would
    attend to each other silently. Virtual-token strategies shift every position, so they cannot pack."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        import transformers

        raise ConfigError(f"data.packing=true needs transformers>=5 (packed-sequence masks); this is "
                          f"transformers {transformers.__version__}: set data.packing=false")
    if not strategy.supports_packing:
        raise ConfigError(f"data.packing=true cannot be combined with peft={strategy.name} (its virtual tokens "
                          "shift every position of a packed row): set data.packing=false")


def _export(model: torch.nn.Module, tokenizer: Any, data: InstructionDataModule, strategy: Strategy,
            cfg: DictConfig, folder: Path) -> None:
    """Hugging Face format: adapter only for peft strategies, the whole model for full / BitFit."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data.prompt_style.save(folder)
    meta = {"base_model": cfg.model.name_or_path, "architecture": cfg.model.architecture, "peft": strategy.name,
            "adapter_only": strategy.adapter_only}
    (folder / "instructune.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("saved %s to %s", "adapter" if strategy.adapter_only else "model", folder)


def _checkpointing(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Trainer arguments for checkpoints: the latest only (``last.ckpt`` links to it), written
    atomically, loaded weights-only."""
    if not cfg.enabled:
        return {"enable_checkpointing": False}
    from lightning.pytorch.callbacks import ModelCheckpoint

    from instructune.models.checkpoint_io import AtomicCheckpointIO, EpochEndCheckpoint

    where = {"dirpath": output_dir / "checkpoints", "save_last": "link", "save_top_k": 1}
    callback = (ModelCheckpoint(every_n_train_steps=cfg.every_n_train_steps, **where) if cfg.every_n_train_steps
                else EpochEndCheckpoint(every_n_epochs=cfg.every_n_epochs, **where))
    return {"enable_checkpointing": True, "callbacks": [callback], "plugins": [AtomicCheckpointIO()]}


def _loggers(cfg: DictConfig, output_dir: Path, sweep_group: str | None) -> list[Any]:
    loggers = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None:
            continue
        kwargs: dict[str, Any] = {"save_dir": str(output_dir)}
        if "WandbLogger" in str(lg_cfg.get("_target_", "")):
            mode = configure_wandb_mode()
            kwargs["group"] = lg_cfg.get("group") or sweep_group
            if mode == "offline":
                log.info("W&B runs offline (no WANDB_API_KEY); sync later with: wandb sync %s/wandb/offline-run-*",
                         output_dir)
        loggers.append(instantiate(lg_cfg, **kwargs))
    return loggers


def _finish_wandb() -> None:
    """Close the W&B run even after a failure, so the next job of a sweep starts clean."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


__all__ = ["run", "SUMMARY_FILE", "PREDICTIONS_FILE", "MODEL_DIR"]
