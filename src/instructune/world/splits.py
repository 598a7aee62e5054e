"""The version-2 world's instruction records: every family split by item, held-out families in test
only, paraphrased test items as their own group, and the two length knobs of Shi et al. (2024).

Splits, for a seen family (items shuffled by ``seed``):

    test        its first items, asked with a training phrasing              group: none (seen)
    test        the same items again, asked with a phrasing never in training  group: paraphrase
    validation  the next items, a training phrasing
    train       the rest, ``train_phrasings_per_item`` training phrasings each

A held-out family contributes ``held_out_items_per_task`` items to test only.

Length knobs (Shi et al., "Instruction Tuning With Loss Over Instructions", 2024: loss over the prompt
helps more when instructions are long relative to outputs):

- ``context_sentences`` k: the instruction starts with k sentences of background that do not bear on
  the question ("The king painted the door.": the corpus's active-voice sentences, which the base model
  has read), so the prompt grows by about 6 tokens per sentence while the answer stays the same.
- ``answer_style``: ``short`` (the answer alone, about 3 tokens) or ``restate`` (the answer as a sentence
  that first restates the request: "The request was: What is the capital of France? The answer is
  Paris."), which makes the output about as long as the question.

Both apply to every split, so evaluation stays in distribution; the context is drawn from its own
random stream, so the knobs never change which items land in which split.
"""

from __future__ import annotations

import random
from typing import Literal

from instructune.world import facts as F
from instructune.world.families import Family, build_families

AnswerStyle = Literal["short", "restate"]
PARAPHRASE_GROUP = "paraphrase"

# Neutral narrative sentences the base model has read (the corpus's active-voice sentences): they
# neither name a task nor state an answer, so context only lengthens the prompt.
CONTEXT_SENTENCES: tuple[str, ...] = tuple(
    f"{a[:1].upper() + a[1:]} {past} {p}." for a in F.AGENTS for past, _ in F.VERBS_PAST.values() for p in F.PATIENTS
    if a != p)


def _record(family: Family, phrasing: str, x: str, y: str, group: str | None = None) -> dict[str, str]:
    instruction, inp = (phrasing.format(x=x), "") if "{x}" in phrasing else (phrasing, x)
    record = {"instruction": instruction, "input": inp, "output": y, "task": family.name, "group": group or ""}
    return record


def _split_family(family: Family, rng: random.Random, max_items: int, phrasings_per_item: int,
                  eval_fraction: float, max_eval_items: int) -> dict[str, list[dict[str, str]]]:
    pairs = list(family.pairs)
    rng.shuffle(pairs)
    pairs = pairs[:max_items]
    n_eval = min(max_eval_items, max(2, round(eval_fraction * len(pairs))))
    test, val, train = pairs[:n_eval], pairs[n_eval: 2 * n_eval], pairs[2 * n_eval:]
    out: dict[str, list[dict[str, str]]] = {"train": [], "validation": [], "test": []}
    for x, y in train:
        for phrasing in rng.sample(family.phrasings, k=min(phrasings_per_item, len(family.phrasings))):
            out["train"].append(_record(family, phrasing, x, y))
    out["validation"] = [_record(family, rng.choice(family.phrasings), x, y) for x, y in val]
    out["test"] = [_record(family, rng.choice(family.phrasings), x, y) for x, y in test]
    if family.paraphrases:
        out["test"] += [_record(family, rng.choice(family.paraphrases), x, y, PARAPHRASE_GROUP) for x, y in test]
    return out


def _lengthen(record: dict[str, str], rng: random.Random, context_sentences: int, answer_style: AnswerStyle) -> None:
    """Apply the length knobs to one record in place (restate first: it restates the bare request)."""
    if answer_style == "restate":
        request = record["instruction"] + (f" {record['input']}" if record["input"] else "")
        record["output"] = f"The request was: {request} The answer is {record['output']}."
    if context_sentences:
        context = " ".join(rng.sample(CONTEXT_SENTENCES, context_sentences))
        record["instruction"] = f"{context} {record['instruction']}"


def instruction_splits_v2(
    seed: int,
    max_items_per_task: int = 120,
    train_phrasings_per_item: int = 2,
    eval_fraction: float = 0.1,
    max_eval_items_per_task: int = 6,
    held_out_items_per_task: int = 12,
    context_sentences: int = 0,
    answer_style: AnswerStyle = "short",
    families: list[Family] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """train / validation / test records of every family (see the module docstring)."""
    if answer_style not in ("short", "restate"):
        raise ValueError(f"answer_style must be 'short' or 'restate', got {answer_style!r}")
    if not 0 <= context_sentences <= len(CONTEXT_SENTENCES):
        raise ValueError(f"context_sentences must be between 0 and {len(CONTEXT_SENTENCES)}, got {context_sentences}")
    rng = random.Random(seed)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": [], "test": []}
    for family in families if families is not None else build_families():
        if family.held_out:
            pairs = list(family.pairs)
            rng.shuffle(pairs)
            splits["test"] += [_record(family, rng.choice(family.phrasings), x, y)
                               for x, y in pairs[:held_out_items_per_task]]
            continue
        for split, records in _split_family(family, rng, max_items_per_task, train_phrasings_per_item,
                                            eval_fraction, max_eval_items_per_task).items():
            splits[split] += records
    for records in splits.values():
        rng.shuffle(records)
    lengths = random.Random(f"{seed}/lengths")
    for split in ("train", "validation", "test"):
        for record in splits[split]:
            _lengthen(record, lengths, context_sentences, answer_style)
    return splits
