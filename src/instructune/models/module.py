"""The LightningModule: one loss for every model family and strategy, computed here on the batch's
shifted targets, so the same code serves instruction tuning and plain language modelling."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from instructune.batch import (IGNORE_INDEX, LOSS_TOKENS_IN_STEP, LOSS_WEIGHTS, POSITION_IDS, Batch, loss_weight_total)



@dataclass
class OptimizerConfig:
    """AdamW with warmup, then linear or cosine decay to zero (transformers' schedules).

    ``lr`` None means the strategy's own default (``conf/peft/*.yaml``, filled in with
    ``with_default_lr``); ``lr_scale`` multiplies whichever lr applies, so one sweep key
    (``optimizer.lr_scale=0.3,1,3``) tunes every strategy around its own default."""

    lr: float | None = None
    lr_scale: float = 1.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.05
    warmup_steps: int | None = None  # set: this many warm-up steps whatever the run's length (eval.budgets)
    schedule: str = "linear"
    fused: bool | None = None  # None: torch's fused AdamW kernel when the parameters are on CUDA

    def __post_init__(self) -> None:
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"optimizer.schedule must be linear, cosine or constant, got {self.schedule!r}")
        self.betas = tuple(self.betas)  # a YAML list from the config

    def with_default_lr(self, default: float | None) -> OptimizerConfig:
        return self if self.lr is not None else replace(self, lr=default)

    @property
    def effective_lr(self) -> float:
        if self.lr is None:
            raise ValueError("no learning rate: set optimizer.lr (the strategy has no default)")
        return self.lr * self.lr_scale


class InstructionTuningModule(L.LightningModule):
    """Wraps a causal or seq2seq Hugging Face model (plain or peft-wrapped).

    Training minimises token-level cross-entropy on ``labels``; validation reports ``val/loss`` and
    ``val/ppl`` on ``response_labels`` (response tokens only, whatever the masking).
    """

    def __init__(self, model: nn.Module, architecture: str = "causal", optimizer: OptimizerConfig | None = None) -> None:
        super().__init__()
        self.model = model
        # torch.compile'd view of ``model`` for training and validation steps (``compile_model``); kept in a
        # tuple so it is no submodule (its ``_orig_mod.`` keys would double the state dict) and generation
        # after training runs the plain model (no recompiles for every new generation length)
        self._compiled: tuple[nn.Module, ...] = ()
        self.architecture = architecture
        self.optim = optimizer or OptimizerConfig()
        self.val_loss = MeanMetric()
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        # Checkpoints of peft / BitFit runs hold the trainable tensors only; the frozen base is
        # loaded from its pretrained weights on resume, so loading is not strict.
        self.strict_loading = False

    def compile_model(self, **options: Any) -> None:
        """Train through ``torch.compile(model, **options)`` (``trainer.compile``). Packed rows stay
        correct: under tracing transformers always builds the block-diagonal mask from the position ids."""
        self._compiled = (torch.compile(self.model, **options),)

    @contextmanager
    def eager(self) -> Iterator[None]:
        """Run the plain model inside this block: FLOP counting (``perf.step_flops``) must see every
        matmul, which a compiled graph hides from ``FlopCounterMode``."""
        compiled, self._compiled = self._compiled, ()
        try:
            yield
        finally:
            self._compiled = compiled

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits aligned with ``batch['labels']`` (virtual prompt-tuning tokens sliced off)."""
        model = self._compiled[0] if self._compiled else self.model
        if self.architecture == "seq2seq":
            decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             decoder_input_ids=decoder_input_ids, use_cache=False)
        elif POSITION_IDS in batch:
            # Packed rows: position ids restart at every document; with no 2-D mask transformers builds the
            # block-diagonal causal mask from them, so documents neither attend to nor predict each other.
            out = model(input_ids=batch["input_ids"], position_ids=batch[POSITION_IDS], use_cache=False)
        else:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        logits = out.logits
        width = batch["labels"].shape[1]
        return logits[:, -width:] if logits.shape[1] != width else logits

    @staticmethod
    def token_loss(logits: torch.Tensor, targets: torch.Tensor,
                   weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss over target tokens, its normaliser): the mean over targets, or with ``weights`` (the
        batch's ``loss_weights``: prompt-loss weight on prompt targets, 1 on response targets) the
        weighted sum divided by the total weight, so the prompt-loss weight changes what the loss
        attends to, not its scale (the learning rate keeps its meaning)."""
        per_token = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                    reduction="none" if weights is not None else "sum")
        total = loss_weight_total(targets, weights)
        loss_sum = (per_token * weights.flatten()).sum() if weights is not None else per_token
        return loss_sum / total.clamp(min=1e-12 if weights is not None else 1), total

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """A token mean over the whole optimiser step: the (weighted) loss sum of this micro-batch divided by
        the loss-bearing tokens (their total weight) of the entire accumulation window on every rank (``loss_tokens_in_step``,
        counted by the sampler in advance). Lightning divides the returned loss by the accumulation
        count and DDP averages gradients over ranks, so both are multiplied back: N processes x A
        micro-batches of B then take exactly the step of one process at batch N*A*B (a mean of
        per-micro-batch means would over-weight short-answer batches).

        Batches without that count (raw-text pretraining blocks) fall back to the global token count
        of this micro-batch (one all_gather under DDP)."""
        mean, n = self.token_loss(self(batch), batch["labels"], batch.get(LOSS_WEIGHTS))
        loss_sum = mean * n  # the sum itself (mean is 0 when nothing carries loss)
        world = self.trainer.world_size if self._trainer is not None else 1
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        if LOSS_TOKENS_IN_STEP in batch:
            loss = loss_sum * (world * accumulate) / max(float(batch[LOSS_TOKENS_IN_STEP]), 1e-12)
        elif world > 1:
            loss = loss_sum * world / self.all_gather(n).sum().clamp(min=1)
        else:
            loss = mean
        if world > 1:  # log the global micro-batch mean, as one process at the global batch would
            mean = self.all_gather(loss_sum.detach()).sum() / self.all_gather(n).sum().clamp(min=1)
        self.log("train/loss", mean, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        if self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch)
        targets = batch["response_labels"]
        loss, n = self.token_loss(logits, targets)
        self.val_loss.update(loss, weight=n)
        self.val_ppl.update(logits.float(), targets)
        self.log("val/loss", self.val_loss, prog_bar=True, on_epoch=True)
        self.log("val/ppl", self.val_ppl, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable parameters (a LoRA checkpoint stays kilobytes, not the whole base),
        and the RNG state, so a resumed run draws the same dropout masks as an uninterrupted one."""
        from torch.distributed.fsdp._common_utils import clean_tensor_name  # FSDP / checkpoint wrappers' prefixes

        trainable = {f"model.{clean_tensor_name(n)}" for n, p in self.model.named_parameters() if p.requires_grad}
        if len(trainable) < sum(1 for _ in self.model.parameters()):
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["instructune_rng"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "instructune_rng" in checkpoint:
            torch.set_rng_state(checkpoint["instructune_rng"])

    def configure_optimizers(self) -> dict[str, Any]:
        from transformers import get_scheduler

        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": self.optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for the whole update on CUDA (torch does not pick it by default); otherwise
        # foreach: one multi-tensor kernel per op instead of a Python loop over parameters (on the CPU it
        # saves a few ms per step of a small model)
        fused = self.optim.fused if self.optim.fused is not None else all(p.is_cuda for g in groups for p in g["params"])
        kernel = {"fused": True} if fused else {"foreach": True}
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.optim.effective_lr,
                                      betas=self.optim.betas, **kernel)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = self.optim.warmup_steps if self.optim.warmup_steps is not None else math.ceil(self.optim.warmup_ratio * total)
        name = "constant_with_warmup" if self.optim.schedule == "constant" else self.optim.schedule
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
