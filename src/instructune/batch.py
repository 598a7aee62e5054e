"""The batch: the one contract between ``data/`` (which produces it) and ``models/`` (which consumes it).

Neither package imports the other; both import this module. A batch is a plain ``dict`` of tensors with the keys
below: token ids, masks and targets are ``torch.long`` (``DTYPE``), loss weights ``torch.float32``
(``WEIGHT_DTYPE``). Causal batches are already shifted: ``labels[:, j]`` is the target of the
logits at position ``j``; seq2seq batches hold the prompt in ``input_ids`` and the response in ``labels``.
"""

from __future__ import annotations

from typing import TypedDict

import torch

IGNORE_INDEX = -100
"""Target value that carries no loss (padding, and prompt tokens under masking); torch's cross-entropy default."""

POSITION_IDS = "position_ids"
LOSS_TOKENS_IN_STEP = "loss_tokens_in_step"
LOSS_WEIGHTS = "loss_weights"

REQUIRED_KEYS = ("input_ids", "attention_mask", "labels", "response_labels")
DTYPE = torch.long
WEIGHT_DTYPE = torch.float32
FLOAT_KEYS = (LOSS_WEIGHTS,)  # the tensors of dtype WEIGHT_DTYPE; every other tensor is DTYPE
SCALAR_KEYS = (LOSS_TOKENS_IN_STEP,)  # plain Python floats, not tensors


class Batch(TypedDict, total=False):
    """What each key means; the first four are always present."""

    input_ids: torch.Tensor  # [batch, positions] token ids, padding included
    attention_mask: torch.Tensor  # [batch, positions] 1 on real tokens, 0 on padding
    labels: torch.Tensor  # training targets, IGNORE_INDEX where no loss is taken
    response_labels: torch.Tensor  # targets on response tokens only: validation loss compares across masking
    position_ids: torch.Tensor  # packed rows only: positions restart at every packed example
    loss_weights: torch.Tensor  # float, like labels: each target's weight in the loss (the prompt-loss weight
    # on prompt targets, 1 on response targets, 0 where labels are IGNORE_INDEX); only when 0 < weight < 1
    loss_tokens_in_step: float  # the loss weight of the whole optimiser step (all micro-batches, all ranks;
    # a token count when there are no loss_weights), counted by the sampler in advance; training batches
    # only. A Python float, not a tensor: Lightning's 16-true / bf16-true precision casts every floating
    # tensor of a batch, and a count above 65,504 would become inf in float16


def loss_token_count(labels: torch.Tensor) -> torch.Tensor:
    """Targets that carry loss (a tensor, so counting never forces a device sync)."""
    return (labels != IGNORE_INDEX).sum()


def loss_weight_total(labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """What a batch's loss is normalised by: the sum of its targets' weights, or their count."""
    return loss_token_count(labels) if weights is None else weights.sum()


__all__ = ["Batch", "IGNORE_INDEX", "POSITION_IDS", "LOSS_TOKENS_IN_STEP", "LOSS_WEIGHTS", "REQUIRED_KEYS", "DTYPE",
           "WEIGHT_DTYPE", "FLOAT_KEYS", "SCALAR_KEYS", "loss_token_count", "loss_weight_total"]
