"""Where preference tuning starts and what it leaves: the finished instruction-tuning run (``init_from``)
as a plain model, the policy and its reference built on it, and the exported result.

The starting model is the instruction-tuned one as a plain transformers model: a full fine-tune as saved,
an adapter run (LoRA, IA3) with its adapter merged into the base weights. Merging, rather than training
the run's own adapter further, is what makes "the same model with the adapter disabled" the reference:
the DPO strategy then adds a fresh adapter on top of the merged model, and disabling it gives exactly the
instruction-tuned model (continuing the SFT adapter, disabling it would give the pretrained base instead).
A fresh LoRA starts with B = 0, so policy and reference agree at step 0 (loss log 2).

Strategies that train the model's own weights (full, BitFit) keep a frozen deep copy as the reference:
a second copy of the weights is unavoidable there (TRL does the same, or precomputes the reference's
scores).

Export (``<run>/model``, read by ``load_tuned`` like any run): the DPO adapter over its base, or the whole
model. An adapter's base is the start's own folder when the start was a full fine-tune (referenced, not
copied), else the merged start saved once under ``<run>/sft_merged`` (the merge exists nowhere else).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from instructune.config_check import ConfigError
from instructune.models.loading import ModelError
from instructune.models.strategies import STRATEGIES, Strategy
from instructune.run_folder import RunFolder, generation_meta, load_tuned, model_folder

log = logging.getLogger(__name__)

MERGED_START_DIR = "sft_merged"


@dataclass
class Start:
    """The instruction-tuned starting model (plain), its tokenizer and prompt style, and where it is saved
    as a plain model folder (None: merged here, in memory only)."""

    path: Path  # the start's model folder (``<sft run>/model``)
    model: nn.Module
    tokenizer: Any
    prompt_style: Any
    meta: dict[str, Any]
    saved_at: Path | None


def load_start(init_from: str | None) -> Start:
    """``init_from`` loaded as a plain causal model, or one line saying why it cannot start DPO."""
    if not init_from:
        raise ConfigError("stage=dpo needs init_from=<run folder>: a finished instruction-tuning run to start from "
                          "and to use as the reference (train one with `python train.py`, then pass its run folder)")
    folder = model_folder(init_from)  # ModelError: not a run folder
    tuned = load_tuned(folder)
    if tuned.architecture != "causal":
        raise ModelError(f"init_from={init_from}: a {tuned.architecture} model; stage=dpo trains causal models only")
    peft = tuned.meta.get("peft", "?")
    if not tuned.meta["adapter_only"]:
        return Start(folder, tuned.model, tuned.tokenizer, tuned.prompt_style, tuned.meta, folder)
    strategy = STRATEGIES.get(peft)
    if strategy is None or not strategy.mergeable:
        raise ModelError(f"init_from={init_from}: peft={peft} adds virtual tokens that cannot be merged into the "
                         "weights, and DPO's reference is the instruction-tuned model with the DPO adapter off; start "
                         "from a lora, ia3, full or bitfit run")
    log.info("init_from=%s: its %s adapter merged into the base weights (the reference, and the DPO start)", folder,
             peft)
    return Start(folder, tuned.model.merge_and_unload(), tuned.tokenizer, tuned.prompt_style, tuned.meta, None)


def policy_and_reference(start: Start, strategy: Strategy) -> tuple[nn.Module, nn.Module | None]:
    """The strategy applied to the start (the policy), and the reference: None for adapter strategies
    (the policy with its adapter disabled), else a frozen copy taken before training."""
    reference = None if strategy.adapter_only else copy.deepcopy(start.model)
    return strategy.apply(start.model, "causal"), reference


def save_merged_start(start: Start, folder: RunFolder) -> None:
    """Before the DPO adapter is added: the merged start, as the base an exported adapter loads onto."""
    if start.saved_at is None:
        start.saved_at = folder.path / MERGED_START_DIR
        start.model.save_pretrained(start.saved_at)


def export_dpo(folder: RunFolder, policy: nn.Module, start: Start, strategy: Strategy) -> Path:
    """``<run>/model``: adapter over the start's saved folder, or the whole policy (module docstring)."""
    if strategy.adapter_only and start.saved_at is None:
        raise ModelError("the merged start was not saved before the adapter was added (save_merged_start)")
    base = start.saved_at if strategy.adapter_only else start.path
    meta = {"base_model": str(base), "architecture": "causal", "peft": strategy.name,
            "adapter_only": strategy.adapter_only, "stage": "dpo", "init_from": str(start.path),
            **generation_meta(start.meta)}
    return folder.export(policy, start.tokenizer, start.prompt_style, meta)


__all__ = ["Start", "load_start", "policy_and_reference", "save_merged_start", "export_dpo", "MERGED_START_DIR"]
