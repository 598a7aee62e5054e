"""Greedy decoding with a KV cache for peft's virtual-token strategies (prompt and prefix tuning).

Why not ``PeftModel.generate``: peft drives these strategies through its own
``prepare_inputs_for_generation``, which has broken with transformers more than once:

- transformers 5.24 passes the KV cache as ``cache`` instead of ``past_key_values``; peft 0.21.2 (the
  newest release on 2026-11-24) still reads ``past_key_values``, so it takes every decoding step for the
  first. Prompt tuning then prepends its virtual tokens again at every step (positions overflow, rows
  misalign) and prefix tuning silently drops its prefix (output = the base model's).
- on every transformers version, peft discards ``position_ids`` for prompt tuning, so the positions of
  left-padded rows count their padding and batched output differs from one-by-one.

So for these two strategies we call the *base* model's forward ourselves, with exactly the inputs that
peft's training forward gives it (virtual-token embeddings or the prefix cache, the extended attention
mask) plus the positions a right-padded training row has (virtual tokens at 0..n-1, the first real
token at n), then feed one new token per step through the cache. Everything else still goes through
``model.generate``. Remove this module once peft reads the cache under transformers' new name and
keeps prompt-tuning position ids (check by running tests/test_generate.py through ``model.generate``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

_VIRTUAL_TOKEN_TYPES = ("PROMPT_TUNING", "PREFIX_TUNING")


def uses_virtual_tokens(model: nn.Module) -> bool:
    """True for a peft model whose active adapter is prompt or prefix tuning."""
    config = getattr(model, "active_peft_config", None)
    return config is not None and str(getattr(config.peft_type, "value", config.peft_type)) in _VIRTUAL_TOKEN_TYPES


def _cache_kwarg(base: nn.Module) -> str:
    """The forward's name for the KV cache: ``cache`` from transformers 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    architecture: str,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
) -> torch.Tensor:
    """New tokens only, ``[batch, <= max_new_tokens]``, rows past their EOS filled with ``pad_token_id``.
    Causal inputs must be left-padded, seq2seq inputs may be padded either way."""
    config = model.active_peft_config  # type: ignore[attr-defined]
    base = model.get_base_model()  # type: ignore[attr-defined,operator]
    n_virtual, batch = config.num_virtual_tokens, input_ids.shape[0]
    is_prefix = str(getattr(config.peft_type, "value", config.peft_type)) == "PREFIX_TUNING"
    cache_key = _cache_kwarg(base)
    ones = attention_mask.new_ones(batch, n_virtual)

    def virtual_embeddings() -> torch.Tensor:
        word = model.word_embeddings(input_ids)  # type: ignore[operator]
        prompts = model.get_prompt(batch_size=batch)[:, :n_virtual].to(word.dtype)  # type: ignore[operator]
        return torch.cat((prompts, word), dim=1)

    if architecture == "causal":
        mask = torch.cat((ones, attention_mask), dim=1)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        if is_prefix:
            step: dict[str, Any] = {"input_ids": input_ids, "position_ids": positions[:, n_virtual:],
                                    cache_key: model.get_prompt(batch_size=batch)}  # type: ignore[operator]
        else:
            step = {"inputs_embeds": virtual_embeddings(), "position_ids": positions}
        step["attention_mask"] = mask
    else:
        start = base.config.decoder_start_token_id
        step = {"decoder_input_ids": input_ids.new_full((batch, 1), start)}
        if is_prefix:  # the encoder reads the plain prompt; the prefix lives in the decoder's cache
            step.update(input_ids=input_ids, attention_mask=attention_mask,
                        **{cache_key: model.get_prompt(batch_size=batch)})  # type: ignore[operator]
        else:
            step.update(inputs_embeds=virtual_embeddings(), attention_mask=torch.cat((ones, attention_mask), dim=1))

    if "logits_to_keep" in inspect.signature(base.forward).parameters:
        step["logits_to_keep"] = 1  # as model.generate does: no [batch, prompt, vocab] logits on the first step
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    new_tokens: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        out = base(**step, use_cache=True)
        token = out.logits[:, -1].argmax(-1)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        new_tokens.append(token)
        if eos_token_id is not None:
            finished |= token == eos_token_id
        if bool(finished.all()):
            break
        step = _next_step(step, out, token[:, None], architecture, cache_key)
    return torch.stack(new_tokens, dim=1) if new_tokens else input_ids.new_zeros(batch, 0)


def _next_step(step: dict[str, Any], out: Any, token: torch.Tensor, architecture: str, cache_key: str) -> dict[str, Any]:
    """Inputs for one more token: the token itself, the cache, and (causal) the grown mask and positions."""
    if architecture == "causal":
        mask = torch.cat((step["attention_mask"], step["attention_mask"].new_ones(token.shape)), dim=1)
        return {"input_ids": token, "attention_mask": mask, "position_ids": step["position_ids"][:, -1:] + 1,
                cache_key: _cache_of(out)}
    from transformers.modeling_outputs import BaseModelOutput

    encoder = step.get("encoder_outputs") or BaseModelOutput(last_hidden_state=out.encoder_last_hidden_state)
    return {"encoder_outputs": encoder, "attention_mask": step["attention_mask"], "decoder_input_ids": token,
            cache_key: _cache_of(out)}


__all__ = ["uses_virtual_tokens", "greedy_decode"]
