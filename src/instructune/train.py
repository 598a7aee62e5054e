"""One training run, from a composed Hydra config to a run folder, in named steps:

    build (tokenizer, data, model, strategy, optimizer: each from its config node) → validate →
    evaluate the base → apply the strategy → fit → evaluate the tuned model → export → summary.json

Everything is read from ``cfg`` here and in its helpers beside it (``instantiate``, ``tracking``,
``config_check``), mostly through ``hydra.utils.instantiate`` on ``_target_`` nodes, and passed down as
objects or plain typed arguments: no module of data/, models/, eval/ or world/ sees the config.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from instructune.config_check import ConfigError, check_answer_room, check_config
from instructune.data.collate import prompt_loss_weight
from instructune.data.datamodule import InstructionDataModule
from instructune.data.tokenizer_loading import load_tokenizer
from instructune.env import resolve_wandb_mode
from instructune.eval.split_evaluation import SplitEvaluation
from instructune.instantiate import build
from instructune.models.limits import position_limit
from instructune.models.loading import count_parameters, load_model, local_model_dir
from instructune.models.module import InstructionTuningModule, OptimizerConfig
from instructune.models.quantization import check_quantized_load
from instructune.models.strategies import Strategy
from instructune.perf import ThroughputMeter
from instructune.report import format_run_table
from instructune.run_folder import RunFolder
from instructune.run_summary import summary_body, tuned_scores
from instructune.selection import check_selection, generation_seconds, restore_best, selection_callbacks
from instructune.sharded import check_sharding, gathered_model, is_sharded
from instructune.speed import compile_options, configure_attention, kernel_report, runs_on_cuda, shape_choices
from instructune.tracking import build_loggers, finish_wandb, log_scores, progress_bar, uses_wandb
from instructune.trainer_parts import (LastValidation, back_on_device, callbacks_from_config, checkpoint_plugins,
                                      checkpoint_to_resume)
from instructune.versions import package_versions

log = logging.getLogger(__name__)

# Keys of the trainer node that are instructune's, not Lightning.Trainer arguments (dropped before it is built).
NOT_TRAINER_ARGS = ("compile",)


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
    folder.path.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict[str, Any] = {"status": "running", "versions": package_versions()}
    try:
        check_config(cfg)
        folder.write_config(OmegaConf.to_yaml(cfg, resolve=True))
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
    weight = prompt_loss_weight(bool(cfg.masking), cfg.get("loss", {}).get("prompt_weight"))
    return {"model": cfg.model.name, "data": cfg.data.name, "peft": get_class(cfg.peft._target_).name,
            "masking": weight == 0, "prompt_weight": weight, "seed": int(cfg.seed),
            "prompt_style": "chat" if cfg.data.get("format") == "messages" else cfg.data.prompt.style}


@dataclass
class Parts:
    """Everything a run is made of, built from the config before any training."""

    tokenizer: Any
    data: InstructionDataModule
    model: nn.Module
    strategy: Strategy
    optimizer: OptimizerConfig
    evaluation: SplitEvaluation
    selection: SplitEvaluation | None  # eval.selection_split: what choices are made on
    kernels: dict[str, Any]  # attention implementation and GPU shape choices, for summary.json


def build_parts(cfg: DictConfig) -> Parts:
    """Strategy and optimizer → the checks that need no model → the model's position limit (its config
    only) → tokenizer → data module (tokenised for fit) → base model → evaluation, each from its node,
    so a bad setting or a bad file fails in seconds, before any weights are loaded."""
    strategy: Strategy = build(cfg.peft, "peft")
    optimizer: OptimizerConfig = build(cfg.optimizer, "optimizer")
    validate(cfg, strategy, optimizer)
    optimizer = optimizer.with_default_lr(strategy.lr)
    if strategy.base_quantization is not None:  # no CUDA or no bitsandbytes: one line before any tokenising
        check_quantized_load(strategy.base_quantization, from_config=bool(cfg.model.from_config))
    if cfg.model.name_or_path and not cfg.model.from_config:
        local_model_dir(cfg.model.name_or_path)  # a missing local folder: one line, not the hub's "Repo id ..."
    if cfg.model.tokenizer:
        local_model_dir(cfg.model.tokenizer, "tokenizer")
    limit = position_limit(cfg.model.name_or_path, _container(cfg.model.from_config), cfg.model.trust_remote_code)
    max_seq_length = fit_to_model(cfg.data.max_seq_length, limit, strategy, cfg.model.name)
    check_answer_room(cfg.eval.max_new_tokens, limit - strategy.positions_taken if limit else None, cfg.model.name)
    on_cuda = runs_on_cuda(cfg.trainer.accelerator)
    shapes = shape_choices(on_cuda, cfg.data.get("pad_to_multiple_of"), cfg.data.get("drop_last"))
    compile_with = compile_options(_container(cfg.trainer.get("compile")))
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name_or_path, cfg.model.trust_remote_code)
    data: InstructionDataModule = build(cfg.data, "data", drop=("name", "path"), tokenizer=tokenizer,
                                        max_seq_length=max_seq_length, pad_to_multiple_of=shapes.pad_to_multiple_of,
                                        drop_last=shapes.drop_last)
    data.setup("fit")
    model = load_base(cfg, strategy)
    if cfg.model.get("gradient_checkpointing"):
        strategy.enable_gradient_checkpointing(model)
    evaluation = SplitEvaluation(data, tokenizer, cfg.model.architecture, cfg.eval.split, cfg.eval.max_examples,
                                 cfg.eval.max_new_tokens, cfg.eval.batch_size,
                                 max_length=limit - strategy.positions_taken if limit else None)
    selection = SplitEvaluation(data, tokenizer, cfg.model.architecture, cfg.eval.selection_split,
                                cfg.eval.get("selection_max_examples"), cfg.eval.max_new_tokens, cfg.eval.batch_size,
                                max_length=limit - strategy.positions_taken if limit else None
                                ) if cfg.eval.get("selection_split") not in (None, cfg.eval.split) else (
        evaluation if cfg.eval.get("selection_split") else None)  # the same split: scored once
    kernels = kernel_report(model, on_cuda, configure_attention(on_cuda), shapes, compile_with)
    return Parts(tokenizer, data, model, strategy, optimizer, evaluation, selection, kernels)


def load_base(cfg: DictConfig, strategy: Strategy) -> nn.Module:
    """The base model as ``model.*`` says, quantized when the strategy trains on a 4-bit base (QLoRA)."""
    return load_model(cfg.model.name_or_path, cfg.model.architecture, _container(cfg.model.from_config),
                      cfg.model.dtype, cfg.model.trust_remote_code, quantization=strategy.base_quantization)


def fit_to_model(max_seq_length: int, limit: int | None, strategy: Strategy, model_name: str) -> int:
    """``data.max_seq_length`` lowered to what the model can take: its absolute positions less the
    strategy's virtual tokens (a longer row would index past the position table)."""
    if limit is None:
        return max_seq_length
    room = limit - strategy.positions_taken
    if room < 2:
        raise ConfigError(f"peft={strategy.name} takes {strategy.positions_taken} of the {limit} positions of "
                          f"model={model_name}, leaving no room for text: lower peft.num_virtual_tokens")
    if max_seq_length > room:
        taken = f" less {strategy.positions_taken} virtual tokens" if strategy.positions_taken else ""
        log.info("data.max_seq_length=%d lowered to %d: model=%s takes %d positions%s", max_seq_length, room,
                 model_name, limit, taken)
        return room
    return max_seq_length


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
    """check → build → base eval → apply the strategy → fit → tuned eval → export → the summary's body."""
    if cfg.get("stage", "sft") != "sft" or cfg.get("init_from"):  # preference tuning (DPO): its own pipeline
        from instructune.dpo_stage import train_and_evaluate_dpo
        return train_and_evaluate_dpo(cfg, folder, sweep_group, rank_zero)
    check_config(cfg)  # every setting, before anything is loaded
    check_selection(cfg)
    check_sharding(cfg)
    ckpt_path = checkpoint_to_resume(cfg.ckpt_path, folder)
    wandb_mode = resolve_wandb_mode() if uses_wandb(cfg) else None  # no key for online, or no network
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    parts = build_parts(cfg)
    base_scores = parts.evaluation.run(parts.model, "base") if cfg.eval.base and rank_zero else None
    model = parts.strategy.apply(parts.model, cfg.model.architecture)
    model.train()  # from_pretrained and the base evaluation leave eval mode (dropout off)
    trainable, total = count_parameters(model)
    module: InstructionTuningModule = build(cfg.module, "module", model=model, optimizer=parts.optimizer)
    loggers = build_loggers(cfg, folder.path, sweep_group, wandb_mode)
    for lg in loggers:
        lg.log_hyperparams({"params/trainable": trainable, "params/total": total,
                            "optimizer/lr": parts.optimizer.effective_lr, **_config_digest(cfg)})
    outcome = "failed"
    try:
        fitted = fit(cfg, parts, module, folder, loggers, ckpt_path)
        if fitted.trainer.global_rank != 0:
            return {"rank": fitted.trainer.global_rank}
        model = back_on_device(fitted.model or model, fitted.trainer)
        tuned, chosen_on = tuned_scores(parts, model, cfg.eval.tuned)
        log_scores(loggers, {"base": base_scores, "tuned": tuned}, fitted.trainer.global_step)
        outcome = "success"
    finally:
        for lg in loggers:
            lg.finalize(outcome)
        finish_wandb()
    parts.evaluation.write_predictions(folder.predictions)
    if cfg.export:
        export(cfg, parts, model, folder)
    result = summary_body(cfg, parts, fitted, folder, (trainable, total), (base_scores, tuned, chosen_on))
    print(format_run_table(result))
    return result



@dataclass
class Fitted:
    trainer: L.Trainer
    seconds: float
    metrics: dict[str, float]
    throughput: dict[str, Any]
    restored: dict[str, Any] | None  # the best checkpoint restored before testing (eval.restore_best)
    callbacks: list[Any]  # the selection callbacks, holding their scores
    model: nn.Module | None  # FSDP: the gathered, unsharded model (rank 0) that evaluation and export use


def fit(cfg: DictConfig, parts: Parts, module: InstructionTuningModule, folder: RunFolder, loggers: list[Any],
        ckpt_path: str | None) -> Fitted:
    """The Trainer from its node, the fit, one more validation if the last step was not validated, and
    the throughput of the training batches (FLOPs from one step re-run on rank 0)."""
    meter, validated = ThroughputMeter(), LastValidation()
    if parts.kernels["compile"] is not None:
        module.compile_model(**parts.kernels["compile"])
    chooser = selection_callbacks(cfg, parts.selection, parts.evaluation)
    trainer: L.Trainer = build(cfg.trainer, "trainer", drop=NOT_TRAINER_ARGS, logger=loggers or False,
                               default_root_dir=str(folder.path),
                               callbacks=[meter, validated, *chooser, *callbacks_from_config(cfg, folder),
                                          *progress_bar(cfg.trainer.get("enable_progress_bar", True))],
                               **checkpoint_plugins(cfg))
    started = time.perf_counter()
    trainer.fit(module, datamodule=parts.data, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - started
    meter.seconds -= generation_seconds(chooser)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    if validated.step != trainer.global_step and trainer.limit_val_batches and parts.data.examples.get("validation"):
        trainer.validate(module, datamodule=parts.data, verbose=False)  # the final model's val loss, always
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    restored = restore_best(trainer, module, chooser) if cfg.eval.get("restore_best") else None
    architecture = cfg.model.architecture
    gathered = gathered_model(trainer, lambda: parts.strategy.apply(load_base(cfg, parts.strategy), architecture),
                              architecture)
    if trainer.global_rank != 0:
        return Fitted(trainer, seconds, metrics, {}, restored, chooser, None)
    # counting FLOPs re-runs one step on rank 0 alone: safe when every rank holds the whole model (one
    # process, DDP), not when parameters are sharded (FSDP, DeepSpeed)
    throughput = meter.summary(module, count_flops=not is_sharded(trainer))
    return Fitted(trainer, seconds, metrics, throughput, restored, chooser, gathered)


def export(cfg: DictConfig, parts: Parts, model: nn.Module, folder: RunFolder) -> None:
    """<run>/model: the adapter (peft strategies) or the whole model, tokenizer, prompt style, meta."""
    meta = {"base_model": cfg.model.name_or_path, "architecture": cfg.model.architecture,
            "peft": parts.strategy.name, "adapter_only": parts.strategy.adapter_only,
            "format": parts.data.format, "stop": list(parts.data.stop)}  # how `instructune generate` prompts it
    log.info("saved %s to %s", "adapter" if parts.strategy.adapter_only else "model",
             folder.export(model, parts.tokenizer, parts.data.prompt_style, meta))


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


__all__ = ["run", "build_parts", "validate", "fit_to_model", "ConfigError"]
