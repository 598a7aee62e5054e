"""Collate tokenised examples into a batch (``instructune.batch``): dynamic padding and loss targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from instructune.batch import IGNORE_INDEX, LOSS_TOKENS_IN_STEP, LOSS_WEIGHTS, POSITION_IDS, WEIGHT_DTYPE
from instructune.data.tokenize import TokenizedExample


def _padded_length(n: int, multiple: int | None, cap: int | None = None) -> int:
    """``n`` rounded up to ``multiple``, never past ``cap`` (the positions the model has left: rounding a
    1,000-position row up to 1,024 would index past GPT-2's table once virtual tokens take 20)."""
    padded = n if not multiple else -(-n // multiple) * multiple
    return max(n, min(padded, cap)) if cap else padded


def prompt_loss_weight(masking: bool, prompt_weight: float | None) -> float:
    """The weight of prompt targets in the loss: ``prompt_weight`` when given (0 is ``masking=true``, 1 is
    ``masking=false``), else what ``masking`` says. Huerta-Enochian & Ko (EMNLP 2024) study values between."""
    weight = (0.0 if masking else 1.0) if prompt_weight is None else float(prompt_weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"loss.prompt_weight must be within [0, 1], got {prompt_weight}")
    return weight


def loss_token_count(example: TokenizedExample, masking: bool, architecture: str = "causal",
                     prompt_weight: float | None = None) -> float:
    """The loss weight of ``example``'s targets once collated: response targets count 1, prompt targets
    the prompt-loss weight (0 with masking). The sampler sums these per accumulation window; mirrors the
    label layout of the collators below."""
    if architecture == "seq2seq":
        return len(example.labels or [])
    n = len(example.input_ids) - 1
    if example.assistant_mask is not None:  # a conversation: assistant targets 1, every other target the weight
        assistant = sum(example.assistant_mask[1:])
        weight = prompt_loss_weight(masking, prompt_weight)
        return n if weight == 1 else assistant + weight * (n - assistant)
    prompt_targets = max(example.prompt_length - 1, 0)
    weight = prompt_loss_weight(masking, prompt_weight)
    return n if weight == 1 else n - prompt_targets + weight * prompt_targets


def _with_window(batch: dict[str, torch.Tensor], examples: Sequence[object]) -> dict[str, torch.Tensor]:
    """Add the sampler's loss-token count of the whole accumulation window (all micro-batches, all
    ranks), which the training loss divides by; absent for evaluation batches."""
    tokens = getattr(examples, "window_tokens", None)
    if tokens is not None:
        batch[LOSS_TOKENS_IN_STEP] = float(tokens)  # a plain float: see batch.py
    return batch


def _causal_buffers(rows: int, width: int, pad_id: int, weight: float) -> dict[str, torch.Tensor]:
    shape = (rows, width)
    batch = {"input_ids": torch.full(shape, pad_id, dtype=torch.long),
             "attention_mask": torch.zeros(shape, dtype=torch.long),
             "labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long),
             "response_labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long)}
    if 0 < weight < 1:  # 0 and 1 are plain masking on / off: every target weighs the same, no tensor needed
        batch[LOSS_WEIGHTS] = torch.zeros(shape, dtype=WEIGHT_DTYPE)
    return batch


def _place_shifted(batch: dict[str, torch.Tensor], row: int, at: int, e: TokenizedExample, weight: float) -> int:
    """Write one example, shifted by one (target j is token j+1), at positions ``at..at+n`` of ``row``;
    returns n. A target belongs to the response once j+1 >= prompt_length; with prompt-loss ``weight``
    0 (masking) the prompt's targets stay ``IGNORE_INDEX``, otherwise they weigh ``weight``."""
    if e.assistant_mask is not None:
        return _place_turns(batch, row, at, e, weight)
    ids = torch.tensor(e.input_ids, dtype=torch.long)
    n = len(e.input_ids) - 1
    first_response_target = max(e.prompt_length - 1, 0)
    first_target = 0 if weight else first_response_target
    batch["input_ids"][row, at : at + n] = ids[:-1]
    batch["attention_mask"][row, at : at + n] = 1
    batch["labels"][row, at + first_target : at + n] = ids[1 + first_target :]
    batch["response_labels"][row, at + first_response_target : at + n] = ids[1 + first_response_target :]
    if LOSS_WEIGHTS in batch:
        batch[LOSS_WEIGHTS][row, at : at + first_response_target] = weight
        batch[LOSS_WEIGHTS][row, at + first_response_target : at + n] = 1.0
    return n


def _place_turns(batch: dict[str, torch.Tensor], row: int, at: int, e: TokenizedExample, weight: float) -> int:
    """``_place_shifted`` for a conversation: a target is the response's when its token is an assistant
    token (``assistant_mask``), wherever it sits; every other target is the prompt's."""
    ids = torch.tensor(e.input_ids, dtype=torch.long)
    assistant = torch.tensor(e.assistant_mask, dtype=torch.bool)[1:]
    n = len(e.input_ids) - 1
    targets = ids[1:]
    batch["input_ids"][row, at : at + n] = ids[:-1]
    batch["attention_mask"][row, at : at + n] = 1
    ignore = torch.full_like(targets, IGNORE_INDEX)
    batch["labels"][row, at : at + n] = targets if weight else torch.where(assistant, targets, ignore)
    batch["response_labels"][row, at : at + n] = torch.where(assistant, targets, ignore)
    if LOSS_WEIGHTS in batch:
        batch[LOSS_WEIGHTS][row, at : at + n] = torch.where(assistant, 1.0, weight)
    return n


@dataclass(frozen=True)
class CausalCollator:
    """Pad to the longest sequence in the batch (not the dataset), shift targets by one.

    Padding is decided by each sequence's length, never by comparing ids with the pad id (GPT-2's pad
    is its EOS, so an id test would also erase the real EOS the model must learn to emit).
    With ``masking`` every target that is a prompt token is ``IGNORE_INDEX``; ``prompt_weight`` (when
    set, it replaces ``masking``) weighs prompt targets by it instead (``loss_weights``).
    """

    pad_id: int
    masking: bool = True
    pad_to_multiple_of: int | None = None
    prompt_weight: float | None = None
    max_width: int | None = None  # padding to a multiple stops here (data.max_seq_length)

    def __call__(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        weight = prompt_loss_weight(self.masking, self.prompt_weight)
        width = _padded_length(max(len(e.input_ids) for e in examples) - 1, self.pad_to_multiple_of, self.max_width)
        batch = _causal_buffers(len(examples), width, self.pad_id, weight)
        for row, e in enumerate(examples):
            _place_shifted(batch, row, 0, e, weight)
        return _with_window(batch, examples)


@dataclass(frozen=True)
class PackedCausalCollator:
    """Several examples per row (``examples.row_sizes`` from the packing sampler), each shifted on
    its own and given position ids that restart at 0, so no target crosses a document boundary.

    The batch carries ``position_ids``; the model gets no 2-D attention mask, and transformers (5.x)
    derives a block-diagonal causal mask from the restarting position ids (its packed-sequence
    detection in ``masking_utils``), so no token attends across documents either. The row tail after
    the last document is padding: its own "document", every target IGNORE_INDEX.
    """

    pad_id: int
    masking: bool = True
    pad_to_multiple_of: int | None = None
    prompt_weight: float | None = None
    max_width: int | None = None  # padding to a multiple stops here (data.max_seq_length)

    def __call__(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        weight = prompt_loss_weight(self.masking, self.prompt_weight)
        sizes = getattr(examples, "row_sizes", None) or [1] * len(examples)
        rows, start = [], 0
        for size in sizes:
            rows.append(examples[start : start + size])
            start += size
        width = _padded_length(max(sum(len(e.input_ids) - 1 for e in row) for row in rows), self.pad_to_multiple_of,
                               self.max_width)
        batch = _causal_buffers(len(rows), width, self.pad_id, weight)
        batch[POSITION_IDS] = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for e in row:
                n = _place_shifted(batch, r, at, e, weight)
                batch[POSITION_IDS][r, at : at + n] = torch.arange(n)
                at += n
            batch[POSITION_IDS][r, at:] = torch.arange(width - at)
        return _with_window(batch, examples)


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
        return _with_window({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                             "response_labels": labels.clone()}, examples)


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
