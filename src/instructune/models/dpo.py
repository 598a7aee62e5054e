"""Direct Preference Optimisation (Rafailov et al. 2023): the loss, and the LightningModule that trains a
causal model on batches of preference pairs (``data.preference_data``: N chosen rows, then N rejected).

A sequence's score is the sum of its answer tokens' log-probabilities (prompt and padding carry
IGNORE_INDEX; TRL's default, the DPO paper's definition). With the reference's scores:

    delta = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    sigmoid: -log sigmoid(beta * delta)        (DPO)
    hinge:   max(0, 1 - beta * delta)          (SLiC)
    robust:  ((1 - e) * -log sigmoid(beta * delta) - e * -log sigmoid(-beta * delta)) / (1 - 2e)
             (rDPO, label noise e = ``label_smoothing``)

exactly as TRL 1.16's ``DPOTrainer`` computes them (tests/test_dpo.py checks the loss and the reward
metrics against its own code on the same batch). The implicit rewards are ``beta * (policy - reference)``.
``sft_weight`` > 0 adds that weight times the chosen answers' mean per-token NLL (RPO, Pang et al. 2024:
DPO alone can widen the margin by making both answers less likely; TRL: ``loss_type=[sigmoid, sft]``).

The reference is the frozen starting model. For adapter strategies it is the same model with the adapter
disabled (``reference=None``: no second copy, and at step 0 a fresh LoRA's zero B matrix makes policy and
reference equal); otherwise a frozen copy is passed in (a full fine-tune has no other way to keep it).
Dropout is off in both by default, as in TRL (``disable_dropout``): the reference's scores are then
deterministic and equal to the starting model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from instructune.batch import IGNORE_INDEX, Batch
from instructune.models.module import InstructionTuningModule, OptimizerConfig

LOSS_TYPES = ("sigmoid", "hinge", "robust")


@dataclass(frozen=True)
class PreferenceLoss:
    """Per pair: the loss and the implicit rewards of both answers."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def check_dpo_options(beta: float, loss_type: str, label_smoothing: float, sft_weight: float = 0.0) -> None:
    """One line for a setting the loss cannot use (``dpo.*``)."""
    if not sft_weight >= 0:
        raise ValueError(f"dpo.sft_weight={sft_weight}: must be >= 0")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"dpo.loss_type={loss_type!r}: must be one of {', '.join(LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"dpo.beta={beta}: must be > 0")
    if loss_type == "robust" and not 0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo.label_smoothing={label_smoothing}: must be in [0, 0.5) for loss_type=robust")
    if loss_type != "robust" and label_smoothing:
        raise ValueError(f"dpo.label_smoothing={label_smoothing} with dpo.loss_type={loss_type}: label smoothing "
                         "(assumed label noise) is the robust loss's parameter (as in TRL); set dpo.loss_type=robust")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> PreferenceLoss:
    """The per-pair loss of sequence log-probabilities (module docstring)."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    scaled = beta * (chosen_ratio - rejected_ratio)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(scaled)
    elif loss_type == "hinge":
        losses = torch.relu(1 - scaled)
    elif loss_type == "robust":
        eps = label_smoothing
        losses = (-(1 - eps) * F.logsigmoid(scaled) + eps * F.logsigmoid(-scaled)) / (1 - 2 * eps)
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r}; one of {', '.join(LOSS_TYPES)}")
    return PreferenceLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: the sum of log p(label) over the targets that are not IGNORE_INDEX (in float32)."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return -per_token.sum(dim=1)


def disable_dropout(model: nn.Module) -> None:
    """Every dropout at p=0 (TRL's ``disable_dropout``): the policy's and the reference's scores of one batch
    are then deterministic, so the loss compares like with like."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


class DPOModule(InstructionTuningModule):
    """Trains ``model`` (plain or peft-wrapped, causal) with the DPO loss against ``reference`` (None: the
    model with its adapter disabled). The optimiser, its schedule, trainable-only checkpoints and
    ``trainer.compile`` are instruction tuning's; logged: ``train/`` and ``val/`` loss, reward accuracy
    (chosen reward above rejected), reward margin, chosen / rejected rewards and the policy's chosen-minus-
    rejected log-probability margin."""

    def __init__(self, model: nn.Module, reference: nn.Module | None = None, beta: float = 0.1,
                 loss_type: str = "sigmoid", label_smoothing: float = 0.0, optimizer: OptimizerConfig | None = None,
                 dropout: bool = False, sft_weight: float = 0.0) -> None:
        check_dpo_options(beta, loss_type, label_smoothing, sft_weight)
        super().__init__(model, "causal", optimizer)
        if reference is None and not hasattr(model, "disable_adapter"):
            raise ValueError("DPOModule: reference=None needs a peft model (its adapter disabled is the reference)")
        self.reference = reference  # a submodule, so Lightning moves it with the policy; never checkpointed
        if reference is not None:
            reference.eval().requires_grad_(False)
        if not dropout:
            disable_dropout(model)
            if reference is not None:
                disable_dropout(reference)
        self.beta, self.loss_type, self.label_smoothing, self.sft_weight = beta, loss_type, label_smoothing, sft_weight

    def train(self, mode: bool = True) -> DPOModule:
        """The reference stays in eval mode whatever the policy's mode (no dropout, ever)."""
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()
        return self

    def policy_logps(self, batch: Batch) -> torch.Tensor:
        return sequence_logps(self(batch), batch["labels"])

    @torch.no_grad()
    def reference_logps(self, batch: Batch) -> torch.Tensor:
        """The frozen starting model's scores: the copy, or the policy with its adapter disabled (eager:
        a compiled graph would keep the adapter)."""
        if self.reference is not None:
            logits = self.reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    use_cache=False).logits
            return sequence_logps(logits[:, -batch["labels"].shape[1]:], batch["labels"])
        with self.eager(), self.model.disable_adapter():
            return self.policy_logps(batch)

    def score(self, batch: Batch) -> PairScores:
        """The batch's pairs scored by the policy against the reference (``PairScores``)."""
        policy, reference = self.policy_logps(batch), self.reference_logps(batch)
        n = policy.shape[0] // 2
        terms = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], self.beta, self.loss_type,
                         self.label_smoothing)
        chosen_nll = -policy[:n].sum() / (batch["labels"][:n] != IGNORE_INDEX).sum().clamp(min=1)
        loss = terms.losses.mean() + (self.sft_weight * chosen_nll if self.sft_weight else 0.0)
        return PairScores(loss, terms, (policy[:n] - policy[n:]).detach(), chosen_nll.detach())

    def _log_scores(self, prefix: str, scores: PairScores, **kwargs: Any) -> None:
        for name, value in scores.stats().items():
            self.log(f"{prefix}/{name}", value, batch_size=scores.pairs, prog_bar=name in ("loss", "reward_accuracy"),
                     **kwargs)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        scores = self.score(batch)
        self._log_scores("train", scores)
        if self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=1)
        return scores.loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._log_scores("val", self.score(batch), on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # trainable tensors only (adapters), RNG state
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("reference.")}

    @torch.no_grad()
    def evaluate_pairs(self, batches: Any) -> dict[str, float] | None:
        """The logged statistics over every pair of ``batches`` (means over pairs), on the module's device."""
        was_training = self.training
        self.eval()
        sums: dict[str, float] = {}
        n = 0
        try:
            for batch in batches:
                scores = self.score({k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                                     for k, v in batch.items()})
                for name, value in scores.stats().items():
                    sums[name] = sums.get(name, 0.0) + float(value) * scores.pairs
                n += scores.pairs
        finally:
            self.train(was_training)
        return {**{name: round(total / n, 6) for name, total in sums.items()}, "n": n} if n else None


@dataclass(frozen=True)
class PairScores:
    """A batch of pairs scored: the loss to minimise (the mean pair loss, plus ``sft_weight`` times the chosen
    answers' per-token NLL), the per-pair terms, the policy's chosen-minus-rejected log-prob margins, and
    that NLL (whether the chosen answers themselves get likelier: DPO can widen the margin by pushing both
    down)."""

    loss: torch.Tensor
    terms: PreferenceLoss
    margins: torch.Tensor
    chosen_nll: torch.Tensor

    @property
    def pairs(self) -> int:
        return int(self.margins.shape[0])

    def stats(self) -> dict[str, torch.Tensor]:
        """Batch means: reward accuracy (TRL's ``rewards/accuracies``: chosen reward strictly above rejected),
        reward margin, both rewards, the log-prob margin and how often it is positive (the policy itself
        ranks the chosen answer first), the chosen answers' NLL per token."""
        t = self.terms
        return {"loss": self.loss.detach(), "reward_accuracy": (t.chosen_rewards > t.rejected_rewards).float().mean(),
                "reward_margin": (t.chosen_rewards - t.rejected_rewards).mean(), "chosen_reward": t.chosen_rewards.mean(),
                "rejected_reward": t.rejected_rewards.mean(), "logp_margin": self.margins.mean(),
                "logp_accuracy": (self.margins > 0).float().mean(), "chosen_nll": self.chosen_nll}


__all__ = ["LOSS_TYPES", "PreferenceLoss", "check_dpo_options", "dpo_loss", "sequence_logps", "disable_dropout",
           "DPOModule", "PairScores"]
