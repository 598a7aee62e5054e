"""Collate tokenised examples into a batch: dynamic padding and loss targets.

The batch is the contract between ``data/`` and ``models/``: a dict of tensors with
``input_ids``, ``attention_mask``, ``labels`` (the training targets) and ``response_labels``
(targets on response tokens only, used for validation so masked and unmasked runs compare).
Causal batches are already shifted: ``labels[:, j]`` is the target for the logits at ``j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from instructune.data.tokenize import TokenizedExample

IGNORE_INDEX = -100


def _padded_length(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


@dataclass(frozen=True)
class CausalCollator:
    """Pad to the longest sequence in the batch (not the dataset), shift targets by one.

    Padding is decided by each sequence's length, never by comparing ids with the pad id (GPT-2's pad
    is its EOS, so an id test would also erase the real EOS the model must learn to emit).
    With ``masking`` every target that is a prompt token is ``IGNORE_INDEX``.
    """

    pad_id: int
    masking: bool = True
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        width = _padded_length(max(len(e.input_ids) for e in examples) - 1, self.pad_to_multiple_of)
        batch = len(examples)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        response_labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(examples):
            ids = torch.tensor(e.input_ids, dtype=torch.long)
            n = len(e.input_ids) - 1
            input_ids[row, :n] = ids[:-1]
            attention_mask[row, :n] = 1
            labels[row, :n] = ids[1:]
            # Target j is token j+1: it belongs to the response once j+1 >= prompt_length.
            first_response_target = max(e.prompt_length - 1, 0)
            response_labels[row, first_response_target:n] = ids[1 + first_response_target :]
            if self.masking:
                labels[row, :first_response_target] = IGNORE_INDEX
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "response_labels": response_labels}


@dataclass(frozen=True)
class Seq2SeqCollator:
    """Encoder gets the prompt, labels are response + EOS; the model builds decoder inputs from labels.

    ``masking`` has no effect here: the prompt never reaches the decoder, so the loss always covers
    the response only.
    """

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        src = _padded_length(max(len(e.input_ids) for e in examples), self.pad_to_multiple_of)
        tgt = _padded_length(max(len(e.labels or []) for e in examples), self.pad_to_multiple_of)
        batch = len(examples)
        input_ids = torch.full((batch, src), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, src), dtype=torch.long)
        labels = torch.full((batch, tgt), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(examples):
            assert e.labels is not None, "seq2seq examples carry labels"
            input_ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            attention_mask[row, : len(e.input_ids)] = 1
            labels[row, : len(e.labels)] = torch.tensor(e.labels)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "response_labels": labels.clone()}


def pack_blocks(token_streams: Sequence[Sequence[int]], block_size: int) -> torch.Tensor:
    """Concatenate documents (each already ending in EOS) and cut into ``block_size + 1`` windows,
    the classic GPT pretraining layout; the remainder is dropped."""
    flat = torch.tensor([t for ids in token_streams for t in ids], dtype=torch.long)
    n_blocks = (len(flat) - 1) // block_size
    if n_blocks < 1:
        raise ValueError(f"{len(flat)} tokens cannot fill one block of {block_size}")
    return torch.stack([flat[i * block_size : i * block_size + block_size + 1] for i in range(n_blocks)])


def collate_blocks(blocks: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain language-model objective on raw text: every position is a target."""
    stacked = torch.stack(list(blocks))
    labels = stacked[:, 1:].contiguous()
    return {"input_ids": stacked[:, :-1].contiguous(), "attention_mask": torch.ones_like(labels),
            "labels": labels, "response_labels": labels}
