"""Turn formatted (prompt, response) pairs into token ids, with a stated truncation policy.

Prompt and response are tokenised separately and concatenated, so no BPE merge crosses the seam
and the prompt length is known exactly (the masking boundary). EOS is appended to the response.

Overlength policy (``overlength``, both families), for records longer than ``max_seq_length``:
``truncate`` (default) cuts from the right, i.e. the response loses its tail (and its EOS), and drops
a record whose response would lose every token (the prompt alone fills the window); ``drop`` drops
every overlength record; ``error`` stops at the first one. Everything cut or dropped is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedExample:
    """Causal: ``input_ids`` = prompt + response + EOS, ``prompt_length`` marks the seam.
    Seq2seq: ``input_ids`` = encoder prompt, ``labels`` = response + EOS.
    A conversation (``data.format=messages``, causal): ``assistant_mask`` is 1 on every assistant turn's
    tokens, 0 elsewhere, and replaces the one seam (``prompt_length`` is then its first assistant token)."""

    input_ids: list[int]
    prompt_length: int
    labels: list[int] | None = None
    assistant_mask: list[int] | None = None


OVERLENGTH_POLICIES = ("truncate", "drop", "error")


class OverlengthError(ValueError):
    """A record longer than ``max_seq_length`` under ``overlength=error`` (``index``: its position)."""

    def __init__(self, index: int, length: int, max_seq_length: int) -> None:
        super().__init__(f"record {index} is {length} tokens long, over max_seq_length={max_seq_length}")
        self.index = index


@dataclass(frozen=True)
class TokenizeStats:
    kept: int
    dropped_empty_response: int
    truncated: int
    dropped_overlength: int = 0
    kept_indices: tuple[int, ...] | None = None  # which input records the examples are (a mixture's groups)

    def __post_init__(self) -> None:  # read back from the token cache's JSON as a list
        if self.kept_indices is not None:
            object.__setattr__(self, "kept_indices", tuple(self.kept_indices))


def tokenize_pairs(
    prompts: Sequence[str],
    responses: Sequence[str],
    tokenizer: Any,
    max_seq_length: int,
    architecture: str = "causal",
    overlength: str = "truncate",
) -> tuple[list[TokenizedExample], TokenizeStats]:
    """Tokenise in two batched calls (prompts, responses) and assemble examples per the policy above."""
    if architecture not in ("causal", "seq2seq"):
        raise ValueError(f"architecture must be 'causal' or 'seq2seq', got {architecture!r}")
    if overlength not in OVERLENGTH_POLICIES:
        raise ValueError(f"overlength must be one of {', '.join(OVERLENGTH_POLICIES)}, got {overlength!r}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no EOS token")
    if not prompts:  # an empty split (a tiny dataset's validation share); fast tokenizers reject []
        return [], TokenizeStats(0, 0, 0)
    # The prompt gets the tokenizer's special tokens (BOS for Llama, </s> for T5's encoder);
    # the response never does, and EOS is appended by hand so it is there for every tokenizer.
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    examples: list[TokenizedExample] = []
    kept: list[int] = []
    dropped = truncated = dropped_overlength = 0
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        target = list(r) + [eos]
        longest = max(len(p), len(target)) if architecture == "seq2seq" else len(p) + len(target)
        if longest > max_seq_length and overlength != "truncate":
            if overlength == "error":
                raise OverlengthError(i, longest, max_seq_length)
            dropped_overlength += 1
            continue
        if architecture == "seq2seq":
            truncated += len(p) > max_seq_length or len(target) > max_seq_length  # a record counts once
            if len(p) > max_seq_length:
                p = p[: max_seq_length - 1] + p[-1:]  # keep the encoder's closing special token
            if len(target) > max_seq_length:
                target = target[:max_seq_length]
            examples.append(TokenizedExample(list(p), len(p), target))
            kept.append(i)
            continue
        full = list(p) + target
        if len(p) >= max_seq_length:
            dropped += 1
            continue
        if len(full) > max_seq_length:
            full = full[:max_seq_length]
            truncated += 1
        examples.append(TokenizedExample(full, len(p)))
        kept.append(i)
    return examples, TokenizeStats(len(examples), dropped, truncated, dropped_overlength, tuple(kept))


def token_lengths(examples: Sequence[TokenizedExample]) -> dict[str, float]:
    """Mean prompt and response tokens (the response with its EOS) and their ratio: the variable by
    which Shi et al. (2024) predict when loss over the prompt helps. Kept in summary.json ``lengths``."""
    if not examples:
        return {"prompt_mean": 0.0, "response_mean": 0.0, "ratio": 0.0}
    # a conversation: its assistant turns are the response, every other token the prompt
    answer = [sum(e.assistant_mask) if e.assistant_mask is not None else len(e.labels) if e.labels is not None
              else len(e.input_ids) - e.prompt_length for e in examples]
    prompt = sum(len(e.input_ids) - a if e.assistant_mask is not None else e.prompt_length
                 for e, a in zip(examples, answer, strict=True)) / len(examples)
    response = sum(answer) / len(examples)
    return {"prompt_mean": round(prompt, 2), "response_mean": round(response, 2),
            "ratio": round(prompt / response, 3) if response else 0.0}


def tokenize_text(texts: Sequence[str], tokenizer: Any) -> list[list[int]]:
    """Raw documents for the plain language-model objective: each followed by EOS."""
    eos = tokenizer.eos_token_id
    return [list(ids) + [eos] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
