"""Greedy, batched generation that stops at EOS (and a chat template's end-of-turn marker), for causal
(left-padded) and seq2seq models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from instructune.eval.virtual_token_decoding import greedy_decode, uses_virtual_tokens


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    architecture: str = "causal",
    max_new_tokens: int = 32,
    batch_size: int = 32,
    max_prompt_tokens: int | None = None,
    stop: Sequence[str] = (),
    add_special_tokens: bool = True,
) -> list[str]:
    """Answers for ``prompts``, whitespace-stripped. Prompts are tokenised exactly as in training
    (special tokens of the tokenizer, nothing else); causal batches are padded on the left so every
    answer starts right after its own prompt. ``max_prompt_tokens`` keeps the last tokens of a longer
    prompt (its response cue), so prompt + answer fit a model with absolute positions.

    ``stop``: texts an answer ends at besides EOS (a chat template's end-of-turn marker): one that is a
    single token joins the stop ids, a longer one (``<|end|>`` in a vocabulary without it) stops a row when
    its new tokens spell it; either way the answer is cut before it. ``add_special_tokens``: False for
    prompts that already hold them as text (rendered chat templates)."""
    stop = [s for s in stop if s]
    stop_ids = _single_token_ids(tokenizer, stop)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side, cut_side = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = "left" if architecture == "causal" else "right"
    tokenizer.truncation_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
                            truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens).to(device)
            if uses_virtual_tokens(model):  # peft's own generate path is broken for these (see the module)
                # it stops at EOS only; a stop text still cuts the answer below
                new = greedy_decode(model, enc["input_ids"], enc["attention_mask"], architecture, max_new_tokens,
                                    tokenizer.eos_token_id, tokenizer.pad_token_id)
            else:
                first_new = enc["input_ids"].shape[1] if architecture == "causal" else 1  # seq2seq: the start token
                texts = [s for s in stop if s not in stop_ids]
                criteria = StoppingCriteriaList([_StopText(tokenizer, texts, first_new)]) if texts else None
                out = model.generate(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max_new_tokens,
                    do_sample=False, num_beams=1,
                    eos_token_id=[tokenizer.eos_token_id, *stop_ids.values()] if stop_ids else tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    stopping_criteria=criteria,
                )
                # causal models return prompt + answer, seq2seq models the answer alone
                new = out[:, enc["input_ids"].shape[1] :] if architecture == "causal" else out
            if stop:
                answers += [_cut(t, stop).strip() for t in tokenizer.batch_decode(
                    [_before(row, stop_ids.values()) for row in new.tolist()], skip_special_tokens=True)]
            else:
                answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, cut_side
        model.train(was_training)
    return answers


def _single_token_ids(tokenizer: Any, stop: Sequence[str]) -> dict[str, int]:
    """The stop texts that are one token of the vocabulary (``<|im_end|>``, ``<|eot_id|>``), with their ids."""
    out = {}
    for text in stop:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and tokenizer.decode(ids) == text:
            out[text] = ids[0]
    return out


def _before(row: list[int], stop_ids: Any) -> list[int]:
    """The row's tokens before its first stop id (one that decoding would drop as special, not cut)."""
    cut = [row.index(i) for i in stop_ids if i in row]
    return row[: min(cut)] if cut else row


def _cut(text: str, stop: Sequence[str]) -> str:
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(found)] if found else text


class _StopText(StoppingCriteria):
    """Stops a row once its new tokens (from ``start``) spell a stop text; a text of n characters ends
    within its row's last n + 1 tokens (none is shorter than a character), so only those are decoded."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], start: int) -> None:
        self.tokenizer, self.stop, self.start = tokenizer, list(stop), start
        self.window = max(len(s) for s in stop) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        tails = input_ids[:, self.start :][:, -self.window :]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], dtype=torch.bool, device=input_ids.device)
