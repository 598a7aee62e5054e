"""Preference tuning (``stage=dpo``), the run that ``train.run`` dispatches to, in named steps:

    check → start (``init_from``: a finished instruction-tuning run, as a plain model) → preference data →
    score the start (exact match, and the DPO statistics on the test pairs) → policy + reference → fit →
    score again → export → the summary's body

The summary has the instruction-tuning run's layout (``eval.base`` is the start, ``eval.tuned`` the DPO
model, on the same test items; predictions.jsonl alike), so ``instructune report`` compares DPO sweeps as
it compares any sweep, plus a ``dpo`` block: beta, loss, the reference, and the reward accuracy, reward
margin and the chosen-over-rejected log-prob margin before and after.

Data: the ``data.source`` node's preference counterpart (``preference_source``): the world's records
become world preference pairs (``world.preferences``), a file (``data=json``) is read for
prompt / chosen / rejected fields (``data.preferences``, field names from ``dpo.fields``).
The model, tokenizer and prompt style are the start's; ``model.*`` and ``data.prompt`` are not read.
``conf/stage/dpo.yaml`` holds the ``dpo.*`` settings and the stage's own defaults (a tenth of the strategy's
learning rate, 200 steps, beta 0.5).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from instructune.config_check import ConfigError, check_answer_room, check_config
from instructune.data.preference_data import PreferenceDataModule
from instructune.data.preferences import PreferenceFields, PreferenceFileSource
from instructune.data.records import DatasetSource, RecordSource
from instructune.dpo_start import Start, export_dpo, load_start, policy_and_reference, save_merged_start
from instructune.env import resolve_wandb_mode
from instructune.eval.split_evaluation import SplitEvaluation
from instructune.instantiate import build
from instructune.models.dpo import DPOModule, check_dpo_options
from instructune.models.limits import positions_left
from instructune.models.loading import count_parameters
from instructune.report import format_run_table
from instructune.run_folder import RunFolder
from instructune.run_summary import summary_body, tuned_scores
from instructune.selection import check_selection
from instructune.speed import compile_options, configure_attention, kernel_report, runs_on_cuda, shape_choices
from instructune.tracking import build_loggers, finish_wandb, log_scores, uses_wandb
from instructune.train import Parts, _config_digest, fit, fit_to_model, validate
from instructune.trainer_parts import back_on_device, checkpoint_to_resume
from instructune.world.preferences import WorldPreferenceSource
from instructune.world.source import WorldSource

log = logging.getLogger(__name__)

STAGES = ("sft", "dpo")


def check_dpo_config(cfg: DictConfig) -> None:
    """What stage=dpo cannot run with, before anything is loaded."""
    stage = cfg.get("stage", "sft")
    if stage not in STAGES:
        raise ConfigError(f"stage={stage}: must be one of {', '.join(STAGES)}")
    if stage == "sft":
        raise ConfigError(f"init_from={cfg.init_from}: read by stage=dpo only (instruction tuning starts from model.*); "
                          "add stage=dpo, or drop init_from")
    if not cfg.get("init_from"):
        load_start(None)  # its one-line error
    try:
        check_dpo_options(float(cfg.dpo.beta), str(cfg.dpo.loss_type), float(cfg.dpo.label_smoothing),
                          float(cfg.dpo.sft_weight))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    mixture = cfg.data.get("mixture")
    if (mixture is not None and mixture.get("by")) or cfg.data.get("balance") or cfg.data.get("mix_with"):
        raise ConfigError("data.mixture / data.balance / data.mix_with with stage=dpo: preference pairs are drawn "
                          "from one source, each once per epoch; drop them (data=world or data=json)")
    if cfg.data.get("packing"):
        raise ConfigError("data.packing=true with stage=dpo: preference pairs are scored one sequence a row; "
                          "set data.packing=false")
    strategy = cfg.trainer.get("strategy")
    name = str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy or "")
    if any(k in name.lower() for k in ("fsdp", "deepspeed")):
        raise ConfigError(f"trainer.strategy={name.rsplit('.', 1)[-1]} with stage=dpo: not supported yet (the "
                          "reference needs the whole model in each process); use one device or trainer=ddp")


def preference_source(source: Any, fields: PreferenceFields) -> RecordSource:
    """``data.source``'s preference counterpart (module docstring); a source whose records already carry
    ``rejected`` (``preference_pairs = True``) as it is."""
    if getattr(source, "preference_pairs", False):
        return source
    if isinstance(source, WorldSource):
        return WorldPreferenceSource(source, seed=source.seed)
    if isinstance(source, DatasetSource):
        return PreferenceFileSource(source.path, fields, source.splits, source.seed, source.subset, source.max_records,
                                    source.max_train_records)
    raise ConfigError(f"stage=dpo: data.source {type(source).__name__} holds no preference pairs; use data=world, "
                      "data=json data.path=<file with chosen and rejected fields>, or a source whose records carry "
                      "'rejected'")


def build_dpo_parts(cfg: DictConfig) -> tuple[Parts, Start]:
    """Strategy and optimizer → the start → the data, cut to the start's positions → evaluations."""
    strategy = build(cfg.peft, "peft")
    optimizer = build(cfg.optimizer, "optimizer")
    validate(cfg, strategy, optimizer)
    optimizer = optimizer.with_default_lr(strategy.lr)
    if strategy.base_quantization is not None:
        raise ConfigError(f"peft={strategy.name} with stage=dpo: the start is the instruction-tuned model in full "
                          "precision (a merged adapter, or a full fine-tune); use peft=lora")
    start = load_start(cfg.init_from)
    name = str(start.meta.get("base_model") or start.path)
    limit = positions_left(start.model)
    max_seq_length = fit_to_model(cfg.data.max_seq_length, limit, strategy, name)
    room = limit - strategy.positions_taken if limit else None
    check_answer_room(cfg.eval.max_new_tokens, room, name)
    on_cuda = runs_on_cuda(cfg.trainer.accelerator)
    shapes = shape_choices(on_cuda, cfg.data.get("pad_to_multiple_of"), cfg.data.get("drop_last"))
    fields = PreferenceFields(**OmegaConf.to_container(cfg.dpo.fields, resolve=True))
    source = preference_source(build(OmegaConf.to_container(cfg.data.source, resolve=True), "data.source"), fields)
    data = PreferenceDataModule(source, start.tokenizer, start.prompt_style, max_seq_length, cfg.data.batch_size,
                                cfg.data.get("eval_batch_size"), cfg.data.num_workers, shapes.pad_to_multiple_of,
                                cfg.seed, cfg.data.overlength, shapes.drop_last, cfg.data.get("overlap"),
                                bool(cfg.data.get("decontaminate", False)), tuple(start.meta.get("stop") or ()))
    data.setup("fit")

    def evaluation(split: str, max_examples: int | None) -> SplitEvaluation:
        return SplitEvaluation(data, start.tokenizer, "causal", split, max_examples,  # type: ignore[arg-type]
                               cfg.eval.max_new_tokens, cfg.eval.batch_size, max_length=room)

    report = evaluation(cfg.eval.split, cfg.eval.max_examples)
    chosen_on = cfg.eval.get("selection_split")
    selection = (None if not chosen_on else report if chosen_on == cfg.eval.split
                 else evaluation(chosen_on, cfg.eval.get("selection_max_examples")))
    kernels = kernel_report(start.model, on_cuda, configure_attention(on_cuda), shapes,
                            compile_options(OmegaConf.to_container(cfg.trainer.compile, resolve=True)
                                            if isinstance(cfg.trainer.get("compile"), DictConfig)
                                            else cfg.trainer.get("compile")))
    return Parts(start.tokenizer, data, start.model, strategy, optimizer, report, selection, kernels), start


def train_and_evaluate_dpo(cfg: DictConfig, folder: RunFolder, sweep_group: str | None,
                           rank_zero: bool = True) -> dict[str, Any]:
    """check → build → score the start → policy + reference → fit → score → export → the summary's body."""
    check_dpo_config(cfg)
    check_config(cfg)
    check_selection(cfg)
    ckpt_path = checkpoint_to_resume(cfg.ckpt_path, folder)
    wandb_mode = resolve_wandb_mode() if uses_wandb(cfg) else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    parts, start = build_dpo_parts(cfg)
    pairs = {"split": cfg.eval.split, "limit": cfg.eval.max_examples}
    base_scores = parts.evaluation.run(parts.model, "base") if cfg.eval.base and rank_zero else None
    if cfg.export and parts.strategy.adapter_only and rank_zero:
        save_merged_start(start, folder)
    model, reference = policy_and_reference(start, parts.strategy)
    model.train()
    trainable, total = count_parameters(model)
    module = DPOModule(model, reference, float(cfg.dpo.beta), str(cfg.dpo.loss_type), float(cfg.dpo.label_smoothing),
                       parts.optimizer, dropout=not cfg.dpo.disable_dropout, sft_weight=float(cfg.dpo.sft_weight))
    before = module.evaluate_pairs(parts.data.loader(pairs["split"], limit=pairs["limit"])) \
        if cfg.eval.base and rank_zero else None
    digest = {**_config_digest(cfg), "stage": "dpo", "init_from": str(start.path),
              "model": start.meta.get("base_model"), "prompt_style": start.prompt_style.name}
    loggers = build_loggers(cfg, folder.path, sweep_group, wandb_mode)
    for lg in loggers:
        lg.log_hyperparams({"params/trainable": trainable, "params/total": total,
                            "optimizer/lr": parts.optimizer.effective_lr, "dpo/beta": float(cfg.dpo.beta), **digest})
    outcome = "failed"
    try:
        with warnings.catch_warnings():  # the frozen reference copy is in eval mode on purpose
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            fitted = fit(cfg, parts, module, folder, loggers, ckpt_path)
        if fitted.trainer.global_rank != 0:
            return {"rank": fitted.trainer.global_rank}
        model = back_on_device(fitted.model or model, fitted.trainer)
        module.to(fitted.trainer.strategy.root_device)  # the reference copy too
        after = module.evaluate_pairs(parts.data.loader(pairs["split"], limit=pairs["limit"])) if cfg.eval.tuned else None
        tuned, selected = tuned_scores(parts, model, cfg.eval.tuned)
        log_scores(loggers, {"base": base_scores, "tuned": tuned, "dpo_before": before, "dpo_after": after},
                   fitted.trainer.global_step)
        outcome = "success"
    finally:
        for lg in loggers:
            lg.finalize(outcome)
        finish_wandb()
    parts.evaluation.write_predictions(folder.predictions)
    if cfg.export:
        log.info("saved the DPO %s to %s", "adapter" if parts.strategy.adapter_only else "model",
                 export_dpo(folder, model, start, parts.strategy))
    result: dict[str, Any] = {
        "config": digest,
        **summary_body(cfg, parts, fitted, folder, (trainable, total), (base_scores, tuned, selected)),
        "dpo": {"beta": float(cfg.dpo.beta), "loss_type": str(cfg.dpo.loss_type),
                "label_smoothing": float(cfg.dpo.label_smoothing), "sft_weight": float(cfg.dpo.sft_weight),
                "init_from": str(start.path),
                "reference": "the start, adapter disabled" if reference is None else "the start, frozen copy",
                "split": pairs["split"], "before": before, "after": after},
    }
    print(format_run_table(result) + dpo_table(result["dpo"]))
    return result


def dpo_table(dpo: dict[str, Any]) -> str:
    """The DPO statistics on the test pairs, start vs tuned, for the end of the run's printout."""
    before, after = dpo.get("before") or {}, dpo.get("after") or {}
    n = (after or before).get("n", 0)
    lines = [f"DPO (beta={dpo['beta']:g}, {dpo['loss_type']}) on {n} {dpo['split']} pairs",
             f"| {'':<31} | {'start':>8} | {'DPO':>8} |", f"|{'-' * 33}|{'-' * 10}|{'-' * 10}|"]
    for key, label in (("logp_margin", "log p(chosen) - log p(rejected)"), ("logp_accuracy", "chosen ranked first"),
                       ("chosen_nll", "chosen NLL per token"), ("reward_accuracy", "reward accuracy"),
                       ("reward_margin", "reward margin"), ("loss", "loss")):
        cells = [f"{s[key]:.3f}" if key in s else "-" for s in (before, after)]
        lines.append(f"| {label:<31} | {cells[0]:>8} | {cells[1]:>8} |")
    return "\n".join(lines) + "\n"


__all__ = ["STAGES", "check_dpo_config", "preference_source", "build_dpo_parts", "train_and_evaluate_dpo", "dpo_table"]
