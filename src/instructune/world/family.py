"""A task family, and the small helpers every family generator shares."""

from __future__ import annotations

import random
from dataclasses import dataclass

from instructune.world import facts as F

Pair = tuple[str, str]


@dataclass(frozen=True)
class Family:
    """One task family. A phrasing with ``{x}`` embeds the item in the instruction (``input`` empty);
    one without it puts the item in ``input``."""

    name: str
    cluster: str
    skill: str
    pairs: tuple[Pair, ...]
    phrasings: tuple[str, ...]
    paraphrases: tuple[str, ...] = ()
    held_out: bool = False


def dedupe(pairs: list[Pair]) -> tuple[Pair, ...]:
    seen: dict[str, str] = {}
    for x, y in pairs:
        seen.setdefault(x, y)
    return tuple(seen.items())


def stream(name: str) -> random.Random:
    """A family's own random stream: its items are the same whatever the split seed or the other families."""
    return random.Random(f"instructune-world-v2/{name}")


W = F.NUMBER_WORDS
WORDS: list[str] = F.SPELLING_WORDS
PLAIN_CAPITALS = {c: k for c, k in F.CAPITALS.items() if " " not in k}


def word_lists(name: str, n: int, k: int, distinct_first: bool = False) -> list[list[str]]:
    rng = stream(name)
    out: list[list[str]] = []
    while len(out) < n:
        words = rng.sample(WORDS, k)
        if distinct_first and len({w[0] for w in words}) < k:
            continue
        out.append(words)
    return out
