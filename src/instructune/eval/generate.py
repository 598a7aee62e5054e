"""Greedy, batched generation that stops at EOS, for causal (left-padded) and seq2seq models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

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
) -> list[str]:
    """Answers for ``prompts``, whitespace-stripped. Prompts are tokenised exactly as in training
    (special tokens of the tokenizer, nothing else); causal batches are padded on the left so every
    answer starts right after its own prompt. ``max_prompt_tokens`` keeps the last tokens of a longer
    prompt (its response cue), so prompt + answer fit a model with absolute positions."""
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
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=True,
                            truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens).to(device)
            if uses_virtual_tokens(model):  # peft's own generate path is broken for these (see the module)
                new = greedy_decode(model, enc["input_ids"], enc["attention_mask"], architecture, max_new_tokens,
                                    tokenizer.eos_token_id, tokenizer.pad_token_id)
            else:
                out = model.generate(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=max_new_tokens,
                    do_sample=False, num_beams=1, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
                # causal models return prompt + answer, seq2seq models the answer alone
                new = out[:, enc["input_ids"].shape[1] :] if architecture == "causal" else out
            answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, cut_side
        model.train(was_training)
    return answers
