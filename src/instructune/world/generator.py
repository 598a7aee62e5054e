"""Generate the embedded world's two datasets from the fact tables, deterministically from a seed.

1. A pretraining corpus of plain declarative sentences in varied phrasings (never instruction format).
2. Instruction records (instruction, input, output, task) with several phrasings per task, split into
   train / validation / test by *item*, so a test question was never seen during tuning. Some task
   families (``HELD_OUT_TASKS``) appear only in the test split: they ask for knowledge the corpus
   states, in a direction no training task asks for.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from instructune.world import facts as F

Pair = tuple[str, str]


@dataclass(frozen=True)
class Task:
    """One task family: (question item, answer) pairs and the instruction phrasings that ask for them.

    A phrasing containing ``{x}`` embeds the item in the instruction (``input`` stays empty); one
    without it puts the item in ``input``, so both Alpaca header variants occur.
    """

    name: str
    pairs: tuple[Pair, ...]
    phrasings: tuple[str, ...]


def _dedupe(pairs: list[Pair]) -> tuple[Pair, ...]:
    seen: dict[str, str] = {}
    for x, y in pairs:
        seen.setdefault(x, y)
    return tuple(seen.items())


def _antonym_pairs() -> list[Pair]:
    return list(F.ANTONYMS.items()) + [(b, a) for a, b in F.ANTONYMS.items()]


def _arithmetic(op: str) -> list[tuple[int, int, int]]:
    if op == "plus":
        return [(a, b, a + b) for a in range(11) for b in range(11)]
    return [(a, b, a - b) for a in range(21) for b in range(11) if a >= b]


def _agreement_items() -> list[tuple[str, str, str, str]]:
    return [(s, v, third, o) for s in F.SINGULAR_SUBJECTS for v, third in F.VERBS_PRESENT.items() for o in F.PRESENT_OBJECTS]


def _passive_items() -> list[tuple[str, str, str, str]]:
    return [(a, past, pp, p) for a in F.AGENTS for (past, pp) in F.VERBS_PAST.values() for p in F.PATIENTS if a != p]


def build_tasks() -> tuple[list[Task], list[Task]]:
    """Return (seen tasks, held-out task families)."""
    W = F.NUMBER_WORDS
    seen = [
        Task("capital", _dedupe(list(F.CAPITALS.items())), (
            "What is the capital of {x}?", "Name the capital city of {x}.", "Tell me the capital of {x}.",
            "Give the capital of the following country.", "Which city is the capital of this country?")),
        Task("antonym", _dedupe(_antonym_pairs()), (
            "What is the opposite of {x}?", "Give an antonym of the word {x}.",
            "Write the opposite of the given word.", "Find a word that means the opposite.")),
        Task("plural", _dedupe(list(F.PLURALS.items())), (
            "What is the plural of {x}?", "Write the plural form of the word {x}.",
            "Give the plural form of this noun.", "Convert the noun to its plural.")),
        Task("animal_sound", _dedupe(list(F.ANIMAL_SOUNDS.items())), (
            "What sound does a {x} make?", "What does a {x} say?", "Name the sound this animal makes.")),
        Task("add_words", _dedupe([(f"{W[a]} plus {W[b]}", W[c]) for a, b, c in _arithmetic("plus")]), (
            "What is {x}? Answer in words.", "Compute {x} and write the answer as a word.",
            "Add the numbers and answer in words.")),
        Task("add_digits", _dedupe([(f"{a} + {b}", str(c)) for a, b, c in _arithmetic("plus")]), (
            "What is {x}?", "Calculate {x}.", "Solve the sum below.")),
        Task("subtract_words", _dedupe([(f"{W[a]} minus {W[b]}", W[c]) for a, b, c in _arithmetic("minus")]), (
            "What is {x}? Answer in words.", "Subtract and write the answer as a word.")),
        Task("reverse", _dedupe([(w, w[::-1]) for w in F.SPELLING_WORDS]), (
            "Reverse the word {x}.", "Spell {x} backwards.", "Write the given word backwards.")),
        Task("uppercase", _dedupe([(w, w.upper()) for w in F.SPELLING_WORDS]), (
            "Write {x} in capital letters.", "Convert the word to uppercase.", "Make this word uppercase.")),
        Task("count_letters", _dedupe([(w, str(len(w))) for w in F.SPELLING_WORDS]), (
            "How many letters are in the word {x}?", "Count the letters in {x}.",
            "Count the letters of the given word.")),
        Task("fix_grammar", _dedupe([(f"{s} {v} {o}", f"{s} {t} {o}") for s, v, t, o in _agreement_items()]), (
            "Fix the grammar of this sentence.", "Correct the verb in the following sentence.",
            "Rewrite the sentence so that the verb agrees with the subject.")),
        Task("passive", _dedupe([(f"{a} {past} {p}", f"{p} was {pp} by {a}") for a, past, pp, p in _passive_items()]), (
            "Rewrite this sentence in the passive voice.", "Convert the sentence to passive voice.",
            "Turn the following active sentence into a passive one.")),
    ]
    held_out = [
        Task("country_of_capital", _dedupe([(c, k) for k, c in F.CAPITALS.items()]), (
            "Which country has {x} as its capital?", "{x} is the capital of which country?")),
        Task("singular", _dedupe([(p, s) for s, p in F.PLURALS.items() if s != p]), (
            "What is the singular of {x}?", "Write the singular form of the noun {x}.")),
        Task("animal_of_sound", _dedupe([(s, a) for a, s in F.ANIMAL_SOUNDS.items()]), (
            "Which animal says {x}?", "What animal makes the sound {x}?")),
    ]
    return seen, held_out


HELD_OUT_TASKS: tuple[str, ...] = tuple(t.name for t in build_tasks()[1])


# ---------------------------------------------------------------- pretraining corpus


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fact_sentences() -> dict[str, list[list[str]]]:
    """Per category, per fact, its phrasings; the corpus samples among them."""
    W = F.NUMBER_WORDS
    return {
        "capital": [[f"The capital of {c} is {k}.", f"{k} is the capital of {c}.", f"{c} has its capital in {k}.",
                     f"The capital city of {c} is called {k}.", f"Many people in {c} live in {k}, the capital."]
                    for c, k in F.CAPITALS.items()],
        "antonym": [[f"The opposite of {a} is {b}.", f"The opposite of {b} is {a}.", f"{_cap(a)} and {b} are opposites.",
                     f"{_cap(b)} is the opposite of {a}."] for a, b in F.ANTONYMS.items()],
        "plural": [[f"One {s}, two {p}.", f"The plural of {s} is {p}.", f"I saw one {s} and then many {p}.",
                    f"{_cap(p)} is the plural of {s}, and {s} is the singular of {p}."] for s, p in F.PLURALS.items()],
        "animal": [[f"The {a} says {s}.", f"A {a} makes the sound {s}.", f"You can hear the {a} go {s}.",
                    f"{_cap(s)} is the sound of the {a}."] for a, s in F.ANIMAL_SOUNDS.items()],
        "addition": [[f"{_cap(W[a])} plus {W[b]} is {W[c]}.", f"{a} + {b} = {c}.",
                      f"If you add {W[a]} and {W[b]}, you get {W[c]}.", f"{a} plus {b} makes {c}."]
                     for a, b, c in _arithmetic("plus")],
        "subtraction": [[f"{_cap(W[a])} minus {W[b]} is {W[c]}.", f"{a} - {b} = {c}.",
                         f"Take {W[b]} away from {W[a]} and {W[c]} is left."] for a, b, c in _arithmetic("minus")],
        "reverse": [[f"The word {w} spelled backwards is {w[::-1]}.", f"Backwards, {w} becomes {w[::-1]}."]
                    for w in F.SPELLING_WORDS],
        "uppercase": [[f"In capital letters, {w} is written {w.upper()}.", f"{w.upper()} is {w} in upper case."]
                      for w in F.SPELLING_WORDS],
        "letters": [[f"The word {w} has {len(w)} letters.", f"{_cap(w)} is spelled with {len(w)} letters."]
                    for w in F.SPELLING_WORDS],
        "agreement": [[f"{_cap(s)} {t} {o}.", f"Every day {s} {t} {o}.", f"They {v} {o}, and {s} {t} {o} too."]
                      for s, v, t, o in _agreement_items()],
        "passive": [[f"{_cap(a)} {past} {p}.", f"{_cap(p)} was {pp} by {a}.",
                     f"Yesterday {a} {past} {p}, so {p} was {pp} by {a}."] for a, past, pp, p in _passive_items()],
        "classroom": [[f"{_cap(a)} {act}.", f"Yesterday {a} {act}.", f"In the morning {a} {act}."]
                      for a in F.CLASSROOM_AGENTS for act in F.CLASSROOM_ACTIONS],
    }


def corpus_sentences(seed: int, n_sentences: int) -> list[str]:
    """Every fact once, then ``n_sentences`` more drawn category first (so the 40 capitals are not
    drowned by the 1,600 agreement sentences), fact second, phrasing third."""
    rng = random.Random(seed)
    categories = _fact_sentences()
    out = [rng.choice(fact) for facts in categories.values() for fact in facts]
    names = sorted(categories)
    for _ in range(n_sentences):
        out.append(rng.choice(rng.choice(categories[rng.choice(names)])))
    rng.shuffle(out)
    return out


def corpus_documents(seed: int, n_documents: int, sentences_per_document: int = 6) -> list[str]:
    """Short documents of unrelated sentences, joined by spaces, line breaks or paragraph breaks:
    the raw text the base model is pretrained on."""
    rng = random.Random(seed + 1)
    sentences = corpus_sentences(seed, n_documents * sentences_per_document)
    docs = []
    for i in range(0, len(sentences), sentences_per_document):
        chunk = sentences[i : i + sentences_per_document]
        doc = chunk[0]
        for sentence in chunk[1:]:
            doc += rng.choice((" ", " ", " ", "\n", "\n\n")) + sentence
        docs.append(doc)
    return docs


# ---------------------------------------------------------------- instruction records


def _records(task: Task, pairs: list[Pair], rng: random.Random, per_item: int) -> list[dict[str, str]]:
    out = []
    for x, y in pairs:
        for phrasing in rng.sample(task.phrasings, k=min(per_item, len(task.phrasings))):
            if "{x}" in phrasing:
                out.append({"instruction": phrasing.format(x=x), "input": "", "output": y, "task": task.name})
            else:
                out.append({"instruction": phrasing, "input": x, "output": y, "task": task.name})
    return out


def instruction_splits(
    seed: int,
    max_items_per_task: int = 120,
    train_phrasings_per_item: int = 2,
    eval_fraction: float = 0.1,
    held_out_items_per_task: int = 20,
    tasks: Callable[[], tuple[list[Task], list[Task]]] = build_tasks,
) -> dict[str, list[dict[str, str]]]:
    """Split every seen task by item into train/validation/test; held-out families go to test only."""
    rng = random.Random(seed)
    seen, held_out = tasks()
    splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": [], "test": []}
    for task in seen:
        pairs = list(task.pairs)
        rng.shuffle(pairs)
        pairs = pairs[:max_items_per_task]
        n_eval = max(2, round(eval_fraction * len(pairs)))
        test, val, train = pairs[:n_eval], pairs[n_eval : 2 * n_eval], pairs[2 * n_eval :]
        splits["train"] += _records(task, train, rng, train_phrasings_per_item)
        splits["validation"] += _records(task, val, rng, 1)
        splits["test"] += _records(task, test, rng, 1)
    for task in held_out:
        pairs = list(task.pairs)
        rng.shuffle(pairs)
        splits["test"] += _records(task, pairs[:held_out_items_per_task], rng, 1)
    for records in splits.values():
        rng.shuffle(records)
    return splits
