"""The skills that compose: an inner step (a lookup or a sum) whose result feeds an outer step (a
letter or number operation), and which pairings are trained or held out. ``families`` builds the
composition families from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from instructune.world import facts as F
from instructune.world.family import PLAIN_CAPITALS, Family, Pair, W, dedupe


@dataclass(frozen=True)
class Inner:
    """A first step: items and answers, and the noun phrase that names its result in an instruction."""

    name: str
    pairs: Callable[[], list[Pair]]
    noun: str  # "the opposite of {x}"


@dataclass(frozen=True)
class Outer:
    """A second step on a word or number: the function, how to ask for it of a noun phrase, and the
    clause that applies it to "it" in a two-sentence instruction."""

    name: str
    apply: Callable[[str], str | None]
    ask: str  # "Write {np} in capital letters."
    then: str  # "write it in capital letters"
    paraphrase: str  # "put {np} in upper case" (never in training)


def plural_pairs() -> list[Pair]:
    return list(F.PLURALS.items())


def singular_pairs() -> list[Pair]:
    return [(p, s) for s, p in F.PLURALS.items() if s != p]


def antonym_pairs() -> list[Pair]:
    return list(F.ANTONYMS.items()) + [(b, a) for a, b in F.ANTONYMS.items()]


def sum_pairs() -> list[Pair]:
    return [(f"{a} + {b}", str(a + b)) for a in range(11) for b in range(11) if a + b <= 19]


def difference_pairs() -> list[Pair]:
    return [(f"{a} - {b}", str(a - b)) for a in range(1, 21) for b in range(11) if a >= b and a - b <= 10]


INNERS: dict[str, Inner] = {i.name: i for i in (
    Inner("antonym", antonym_pairs, "the opposite of {x}"),
    Inner("singular", singular_pairs, "the singular of {x}"),
    Inner("animal_of_sound", lambda: [(s, a) for a, s in F.ANIMAL_SOUNDS.items()], "the animal that says {x}"),
    Inner("capital", lambda: list(PLAIN_CAPITALS.items()), "the capital of {x}"),
    Inner("country_of_capital", lambda: [(k, c) for c, k in PLAIN_CAPITALS.items()],
          "the country whose capital is {x}"),
    Inner("add", sum_pairs, "the sum {x}"),
    Inner("subtract", difference_pairs, "the difference {x}"),
)}


def _number(f: Callable[[int], int]) -> Callable[[str], str | None]:
    def apply(y: str) -> str | None:
        v = f(int(y))
        return str(v) if 0 <= v <= 20 else None
    return apply


OUTERS: dict[str, Outer] = {o.name: o for o in (
    Outer("upper", str.upper, "Write {np} in capital letters.", "write it in capital letters",
          "Put {np} in upper case."),
    Outer("reverse", lambda y: y[::-1], "Spell {np} backwards.", "spell it backwards",
          "Give {np} with its letters in reverse order."),
    Outer("first_letter", lambda y: y[0], "What is the first letter of {np}?", "give its first letter",
          "Which letter does {np} start with?"),
    Outer("last_letter", lambda y: y[-1], "What is the last letter of {np}?", "give its last letter",
          "Which letter does {np} end with?"),
    Outer("count_letters", lambda y: str(len(y)), "How many letters are in {np}?", "count its letters",
          "Tell me the length of {np} in letters."),
    Outer("successor", _number(lambda v: v + 1), "What number comes after {np}?", "add one to it",
          "Give the number that follows {np}."),
    Outer("predecessor", _number(lambda v: v - 1), "What number comes before {np}?", "subtract one from it",
          "Give the number just below {np}."),
    Outer("double", _number(lambda v: 2 * v), "What is twice {np}?", "double it", "Multiply {np} by two."),
    Outer("in_words", lambda y: W[int(y)], "Write {np} as a word.", "write it as a word",
          "Spell out {np} in letters."),
)}

# (inner, outer) -> seen in training or held out. Every inner and every outer appears in a seen
# composition and as a single-skill family; each held-out pair is new only as a pair.
SEEN_COMPOSITIONS: tuple[tuple[str, str], ...] = (
    ("antonym", "upper"), ("singular", "reverse"), ("animal_of_sound", "first_letter"),
    ("antonym", "count_letters"), ("singular", "last_letter"), ("capital", "first_letter"),
    ("country_of_capital", "upper"), ("add", "successor"), ("subtract", "in_words"), ("subtract", "predecessor"),
    ("capital", "reverse"), ("animal_of_sound", "count_letters"),
)
HELD_OUT_COMPOSITIONS: tuple[tuple[str, str], ...] = (
    ("singular", "upper"), ("antonym", "reverse"), ("antonym", "first_letter"), ("singular", "count_letters"),
    ("animal_of_sound", "last_letter"), ("animal_of_sound", "upper"), ("add", "predecessor"), ("add", "in_words"),
    ("subtract", "successor"), ("country_of_capital", "first_letter"), ("antonym", "last_letter"),
    ("capital", "upper"),
)


def composition(inner_name: str, outer_name: str, held_out: bool) -> Family:
    inner, outer = INNERS[inner_name], OUTERS[outer_name]
    pairs = []
    for x, y in inner.pairs():
        z = outer.apply(y)
        if z is not None:
            pairs.append((x, z))
    np = inner.noun
    return Family(
        f"{outer_name}_of_{inner_name}", "composition", f"{outer_name} of {inner_name}", dedupe(pairs),
        (outer.ask.replace("{np}", np), f"Find {np}. Then {outer.then}."),
        (outer.paraphrase.replace("{np}", np),), held_out)
