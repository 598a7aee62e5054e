"""The version-2 world as conversations (``data.format=messages``): every instruction record as one
exchange, and multi-turn episodes whose follow-up works on the previous answer.

An episode extends a record of a first-step family (a lookup or a sum, ``FIRST_STEPS``) with a second
turn that applies a second skill to the answer, asked as a follow-up that refers to it:

    user       What is the capital of France?
    assistant  Paris
    user       Now write it in capital letters.
    assistant  PARIS

The (first step, second step) pairs are the world's compositions (``SEEN_COMPOSITIONS`` and
``HELD_OUT_COMPOSITIONS``): seen pairs make episodes in every split, held-out pairs in the test split only,
so the held-out episodes ask for a pairing never trained, in turns instead of one instruction. An episode
is made from a record of its own split (its item never crosses splits), follows that record, and is its
own group in the scores: ``multi_turn`` (seen pairs) and ``multi_turn_held_out``; its task is
``<family>_then_<second step>`` (``capital_then_upper``). Paraphrase items get no episode.

Each eligible record gets an episode with probability ``multi_turn_fraction``, drawn from a random stream of
its own (``seed``), so the single-turn conversations are exactly the instruction world's records.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from instructune.world.families import HELD_OUT_COMPOSITIONS, OUTERS, SEEN_COMPOSITIONS

if TYPE_CHECKING:
    from instructune.world.compositions import Outer

MULTI_TURN_GROUP = "multi_turn"
MULTI_TURN_HELD_OUT_GROUP = "multi_turn_held_out"
# the single-skill family whose answer a second step can use -> the composition inner it is
FIRST_STEPS: dict[str, str] = {"antonym": "antonym", "singular": "singular", "animal_of_sound": "animal_of_sound",
                               "capital": "capital", "country_of_capital": "country_of_capital",
                               "add_digits": "add", "subtract_digits": "subtract"}
# how a follow-up asks for the second step of "it", the previous answer (Outer.then: "write it in capital letters")
FOLLOW_UPS: tuple[str, ...] = ("Now {then}.", "Take your answer and {then}.")


def _second_steps(pairs: tuple[tuple[str, str], ...]) -> dict[str, list[Outer]]:
    out: dict[str, list[Outer]] = defaultdict(list)
    for inner, outer in pairs:
        out[inner].append(OUTERS[outer])
    return out


SEEN_STEPS = _second_steps(SEEN_COMPOSITIONS)
HELD_OUT_STEPS = _second_steps(HELD_OUT_COMPOSITIONS)


def user_turn(record: dict[str, str]) -> str:
    """An instruction record's request as one user turn (as the ``chat`` prompt style joins them)."""
    return f"{record['instruction']}\n\n{record['input']}" if record["input"] else record["instruction"]


def exchange(record: dict[str, str]) -> dict[str, Any]:
    """An instruction record as a one-exchange conversation, with its task and group."""
    return {"messages": [{"role": "user", "content": user_turn(record)},
                         {"role": "assistant", "content": record["output"]}],
            "task": record["task"], "group": record.get("group", "")}


def episode(record: dict[str, str], step: Outer, follow_up: str, group: str) -> dict[str, Any] | None:
    """``record``'s exchange and a follow-up applying ``step`` to its answer; None when the step does not
    apply (a multi-word answer, a number out of range)."""
    answer = record["output"]
    second = step.apply(answer) if " " not in answer else None
    if second is None:
        return None
    messages = [*exchange(record)["messages"], {"role": "user", "content": follow_up.format(then=step.then)},
                {"role": "assistant", "content": second}]
    return {"messages": messages, "task": f"{record['task']}_then_{step.name}", "group": group}


def conversation_splits(splits: dict[str, list[dict[str, str]]], seed: int,
                        multi_turn_fraction: float) -> dict[str, list[dict[str, Any]]]:
    """Every record as an exchange, each followed by its episode(s) when drawn (module docstring)."""
    if not 0 <= multi_turn_fraction <= 1:
        raise ValueError(f"multi_turn_fraction must be within [0, 1], got {multi_turn_fraction}")
    rng = random.Random(f"{seed}/conversations")
    out: dict[str, list[dict[str, Any]]] = {}
    for split, records in splits.items():
        out[split] = []
        for record in records:
            out[split].append(exchange(record))
            inner = FIRST_STEPS.get(record["task"])
            if inner is None or record.get("group") or rng.random() >= multi_turn_fraction:
                continue
            options = [(SEEN_STEPS[inner], MULTI_TURN_GROUP)]
            if split == "test" and HELD_OUT_STEPS[inner]:
                options.append((HELD_OUT_STEPS[inner], MULTI_TURN_HELD_OUT_GROUP))
            for steps, group in options:
                made = episode(record, rng.choice(steps), rng.choice(FOLLOW_UPS), group)
                if made is not None:
                    out[split].append(made)
    return out


__all__ = ["FIRST_STEPS", "FOLLOW_UPS", "MULTI_TURN_GROUP", "MULTI_TURN_HELD_OUT_GROUP", "conversation_splits",
           "episode", "exchange", "user_turn"]
