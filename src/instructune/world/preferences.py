"""The embedded world as preference pairs, for preference tuning (``stage=dpo``): every instruction record
of the world's splits keeps its correct answer as ``chosen`` (``output``) and gets a plausible wrong one
as ``rejected``.

Wrong answers are the answers of other items of the same family in the same split ("What is the capital
of France?" chosen ``Paris``, rejected e.g. ``Rome``): the right type and form, so only knowing the item
tells them apart; it is the commonest mistake of an instruction-tuned world model (303 of the 645 wrong
test answers of the default ``python train.py`` run are another answer of the item's family). Among a few drawn
candidates the one sharing the longest start with the correct answer is kept (``reverse`` of ``table``:
``elbat`` vs ``elcric`` rather than ``god``), so the pair differs where a greedy decoder goes wrong rather
than at the first token only; a family with a single answer in a split (a validation share of a count
family) draws from its answers in the other splits. Deterministic in ``seed`` and the split; the splits
themselves are the world's (``WorldSource``), so the test items and the SFT run's test items are the same.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import ClassVar

from instructune.data.records import DataError, Record, Splits
from instructune.world.source import WorldSource


@dataclass
class WorldPreferenceSource:
    """``world``'s records with a ``rejected`` answer each (module docstring). ``candidates``: wrong
    answers drawn per record, of which the one closest to the correct answer at its start is kept
    (1: a uniformly drawn wrong answer)."""

    world: WorldSource = field(default_factory=WorldSource)
    seed: int = 0
    candidates: int = 4
    preference_pairs: ClassVar[bool] = True  # records carry ``rejected`` (what stage=dpo checks for)

    def load(self) -> Splits:
        if self.candidates < 1:
            raise DataError(f"world preferences: candidates must be >= 1, got {self.candidates}")
        splits = self.world.load()
        every = family_answers([r for records in splits.values() for r in records])
        return {split: with_rejected(records, random.Random(f"world-preferences/{self.seed}/{split}"), self.candidates,
                                     every)
                for split, records in splits.items()}


def family_answers(records: list[Record]) -> dict[str, list[str]]:
    """task -> its distinct answers, in order of appearance (records without a task: one family)."""
    by_task: dict[str, list[str]] = {}
    for r in records:
        answers = by_task.setdefault(r.get("task", ""), [])
        if r["output"] not in answers:
            answers.append(r["output"])
    return by_task


def with_rejected(records: list[Record], rng: random.Random, candidates: int = 4,
                  fallback: dict[str, list[str]] | None = None) -> list[Record]:
    """Each record with ``rejected``: another answer of its family in ``records`` (records without a task
    form one family), the closest at its start among ``candidates`` draws. A family with a single distinct
    answer here takes its wrong answers from ``fallback`` (its answers in every split), else from the
    answers of every family here."""
    by_task = family_answers(records)
    everything = list(dict.fromkeys(r["output"] for r in records))
    out = []
    for r in records:
        task, right = r.get("task", ""), r["output"].strip()
        wrong = [a for a in by_task[task] if a.strip() != right]
        if not wrong:
            wrong = [a for a in (fallback or {}).get(task, []) if a.strip() != right]
        if not wrong:
            wrong = [a for a in everything if a.strip() != right]
        if not wrong:
            raise DataError(f"world preferences: every record of this split answers {r['output']!r}; "
                            "no wrong answer to pair it with")
        drawn = [rng.choice(wrong) for _ in range(candidates)]
        out.append({**r, "rejected": max(drawn, key=lambda a: len(os.path.commonprefix([a, r["output"]])))})
    return out


__all__ = ["WorldPreferenceSource", "family_answers", "with_rejected"]
