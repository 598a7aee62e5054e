"""The world's task families (version 2): 68 procedural families in 6 clusters, 12 of them held out.

A family is one skill (or a composition of two) with its items and its phrasings. Clusters group
families by skill as FLAN and Super-NaturalInstructions do:

    lookup       world knowledge the base model read as plain sentences (capital, antonym, plural ...)
    spelling     letter-level operations on a word (reverse, uppercase, first letter ...)
    arithmetic   numbers 0-20 as digits and as words (add, subtract, successor, larger ...)
    grammar      sentence rewriting (subject-verb agreement, passive, negation, questions ...)
    words        operations on short word lists (first word, count, sort ...)
    composition  a lookup or arithmetic step whose result feeds a second skill, in one instruction
                 ("Write the opposite of big in capital letters." -> SMALL)

The held-out families (``HELD_OUT``) are compositions too, but of an inner and an outer skill that no
training family combines: every skill, and every phrase that asks for it, is seen in training; only
the pairing is new. That is the "new compositions of seen skills" split, not inverses of seen tasks.

Every seen family also has ``paraphrases``: instruction wordings never used in training, asked of the
family's test items, so "robustness to phrasing" is its own column (``group: paraphrase``).

Items are generated from the fact tables and a fixed per-family random stream, so a family's items
never depend on the split seed; ``splits.instruction_splits_v2`` does the splitting. The composable
skills and which pairings are held out live in ``compositions``.
``python -m instructune.world.families`` prints the catalogue (cluster, skill, one example each).
"""

from __future__ import annotations

from collections.abc import Callable

from instructune.world import facts as F
from instructune.world.compositions import (
    HELD_OUT_COMPOSITIONS,
    INNERS,
    OUTERS,
    SEEN_COMPOSITIONS,
    antonym_pairs,
    composition,
    difference_pairs,
    plural_pairs,
    singular_pairs,
    sum_pairs,
)
from instructune.world.family import WORDS, Family, W, dedupe, stream, word_lists

__all__ = [
    "HELD_OUT",
    "HELD_OUT_COMPOSITIONS",
    "INNERS",
    "OUTERS",
    "SEEN_COMPOSITIONS",
    "Family",
    "build_families",
    "catalogue",
]

# ----------------------------------------------------------------- single-skill families

def _agreement() -> list[tuple[str, str, str, str]]:
    return [(s, v, t, o) for s in F.SINGULAR_SUBJECTS for v, t in F.VERBS_PRESENT.items() for o in F.PRESENT_OBJECTS]


def _passive() -> list[tuple[str, str, str, str]]:
    return [(a, past, pp, p) for a in F.AGENTS for past, pp in F.VERBS_PAST.values() for p in F.PATIENTS if a != p]


def _lookup() -> list[Family]:
    return [
        Family("capital", "lookup", "country -> capital", dedupe(list(F.CAPITALS.items())),
               ("What is the capital of {x}?", "Name the capital city of {x}.", "Give the capital of the following country."),
               ("Which city is the seat of government of {x}?",)),
        Family("country_of_capital", "lookup", "capital -> country", dedupe([(k, c) for c, k in F.CAPITALS.items()]),
               ("Which country has {x} as its capital?", "Name the country whose capital is the following city."),
               ("{x} is the capital of which country?",)),
        Family("antonym", "lookup", "word -> opposite", dedupe(antonym_pairs()),
               ("What is the opposite of {x}?", "Give an antonym of the word {x}.", "Write the opposite of the given word."),
               ("Find a word that means the reverse of {x}.",)),
        Family("plural", "lookup", "noun -> plural", dedupe(plural_pairs()),
               ("What is the plural of {x}?", "Write the plural form of the word {x}.", "Convert the noun to its plural."),
               ("How do you say more than one {x}?",)),
        Family("singular", "lookup", "plural -> singular", dedupe(singular_pairs()),
               ("What is the singular of {x}?", "Write the singular form of the noun {x}."),
               ("How do you say just one of the {x}?",)),
        Family("animal_sound", "lookup", "animal -> sound", dedupe(list(F.ANIMAL_SOUNDS.items())),
               ("What sound does a {x} make?", "Name the sound this animal makes."), ("What does a {x} say?",)),
        Family("animal_of_sound", "lookup", "sound -> animal", dedupe([(s, a) for a, s in F.ANIMAL_SOUNDS.items()]),
               ("Which animal says {x}?", "Name the animal that makes this sound."),
               ("What animal makes the sound {x}?",)),
    ]


def _spelling() -> list[Family]:
    def fam(name: str, skill: str, f: Callable[[str], str], phrasings: tuple[str, ...], para: str,
            source: Callable[[str], str] = lambda w: w) -> Family:
        return Family(name, "spelling", skill, dedupe([(source(w), f(w)) for w in WORDS]), phrasings, (para,))

    return [
        fam("reverse", "word -> backwards", lambda w: w[::-1],
            ("Spell {x} backwards.", "Reverse the word {x}.", "Write the given word backwards."),
            "Give {x} with its letters in reverse order."),
        fam("uppercase", "word -> capitals", str.upper,
            ("Write {x} in capital letters.", "Convert the word to uppercase."), "Put {x} in upper case."),
        fam("count_letters", "word -> letter count", lambda w: str(len(w)),
            ("How many letters are in {x}?", "Count the letters of the given word."),
            "Tell me the length of {x} in letters."),
        fam("first_letter", "word -> first letter", lambda w: w[0],
            ("What is the first letter of {x}?", "Give the first letter of the word."),
            "Which letter does {x} start with?"),
        fam("last_letter", "word -> last letter", lambda w: w[-1],
            ("What is the last letter of {x}?", "Give the last letter of the word."),
            "Which letter does {x} end with?"),
        fam("lowercase", "CAPITALS -> word", lambda w: w, ("Write {x} in small letters.", "Convert the word to lowercase."),
            "Put {x} in lower case.", source=str.upper),
        fam("spell_out", "word -> letters", lambda w: " ".join(w),
            ("Spell out the word {x} letter by letter.", "Write the letters of the word with spaces between them."),
            "Separate the letters of {x} with spaces."),
        fam("join_letters", "letters -> word", lambda w: w,
            ("Join these letters into a word: {x}", "Write the letters as one word."),
            "Which word do the letters {x} make?", source=lambda w: " ".join(w)),
        fam("capitalize", "word -> Word", lambda w: w[:1].upper() + w[1:],
            ("Capitalize the first letter of {x}.", "Start the word with a capital letter."),
            "Write {x} with a capital first letter."),
        fam("repeat_word", "word -> word word", lambda w: f"{w} {w}",
            ("Write the word {x} twice.", "Repeat the word two times."), "Say {x} two times."),
    ]


def _arithmetic() -> list[Family]:
    rng = stream("larger")
    pairs_ab = [(a, b) for a in range(21) for b in range(21) if a != b]
    rng.shuffle(pairs_ab)
    return [
        Family("add_digits", "arithmetic", "a + b", dedupe(sum_pairs()),
               ("What is {x}?", "Calculate {x}.", "Solve the sum below."), ("Work out {x}.",)),
        Family("add_words", "arithmetic", "a plus b, in words",
               dedupe([(f"{W[a]} plus {W[b]}", W[a + b]) for a in range(11) for b in range(11)]),
               ("What is {x}? Answer in words.", "Add the numbers and answer in words."),
               ("Work out {x} and give the result as a word.",)),
        Family("subtract_digits", "arithmetic", "a - b", dedupe(difference_pairs()),
               ("What is {x}?", "Calculate {x}.", "Solve the subtraction below."), ("Work out {x}.",)),
        Family("subtract_words", "arithmetic", "a minus b, in words",
               dedupe([(f"{W[a]} minus {W[b]}", W[a - b]) for a in range(21) for b in range(11) if a >= b]),
               ("What is {x}? Answer in words.", "Subtract and write the answer as a word."),
               ("Work out {x} and give the result as a word.",)),
        Family("in_words", "arithmetic", "digits -> word", dedupe([(str(n), W[n]) for n in range(21)]),
               ("Write {x} as a word.", "Write the number in words."), ("Spell out {x} in letters.",)),
        Family("in_digits", "arithmetic", "word -> digits", dedupe([(W[n], str(n)) for n in range(21)]),
               ("Write {x} in digits.", "Write the number with digits."), ("Give {x} as a numeral.",)),
        Family("successor", "arithmetic", "n -> n + 1", dedupe([(str(n), str(n + 1)) for n in range(20)]),
               ("What number comes after {x}?", "Give the next number."), ("Give the number that follows {x}.",)),
        Family("predecessor", "arithmetic", "n -> n - 1", dedupe([(str(n), str(n - 1)) for n in range(1, 21)]),
               ("What number comes before {x}?", "Give the previous number."), ("Give the number just below {x}.",)),
        Family("double", "arithmetic", "n -> 2n", dedupe([(str(n), str(2 * n)) for n in range(11)]),
               ("What is twice {x}?", "Double the number."), ("Multiply {x} by two.",)),
        Family("larger", "arithmetic", "a, b -> the larger", dedupe([(f"{a} and {b}", str(max(a, b))) for a, b in pairs_ab]),
               ("Which is larger: {x}?", "Give the larger of the two numbers."), ("Pick the bigger number of {x}.",)),
        Family("smaller", "arithmetic", "a, b -> the smaller", dedupe([(f"{b} and {a}", str(min(a, b))) for a, b in pairs_ab]),
               ("Which is smaller: {x}?", "Give the smaller of the two numbers."), ("Pick the lower number of {x}.",)),
        Family("multiply", "arithmetic", "a x b (at most 20)",
               dedupe([(f"{a} times {b}", str(a * b)) for a in range(1, 11) for b in range(1, 11) if a * b <= 20]),
               ("What is {x}?", "Multiply the numbers."), ("Work out {x}.",)),
    ]


def _grammar() -> list[Family]:
    third = {t: v for v, t in F.VERBS_PRESENT.items()}
    past = [(v, pt, pp) for v, (pt, pp) in F.VERBS_PAST.items()]
    return [
        Family("fix_grammar", "grammar", "agreement", dedupe([(f"{s} {v} {o}", f"{s} {t} {o}") for s, v, t, o in _agreement()]),
               ("Fix the grammar of this sentence.", "Correct the verb in the following sentence."),
               ("Rewrite the sentence so that the verb agrees with the subject.",)),
        Family("passive", "grammar", "active -> passive",
               dedupe([(f"{a} {pt} {p}", f"{p} was {pp} by {a}") for a, pt, pp, p in _passive()]),
               ("Rewrite this sentence in the passive voice.", "Convert the sentence to passive voice."),
               ("Turn the following active sentence into a passive one.",)),
        Family("active", "grammar", "passive -> active",
               dedupe([(f"{p} was {pp} by {a}", f"{a} {pt} {p}") for a, pt, pp, p in _passive()]),
               ("Rewrite this sentence in the active voice.", "Convert the sentence to active voice."),
               ("Turn the following passive sentence into an active one.",)),
        Family("past_tense", "grammar", "verb -> past", dedupe([(v, pt) for v, pt, _ in past]),
               ("What is the past tense of {x}?", "Write the past tense of the verb."), ("Put the verb {x} in the past.",)),
        Family("past_participle", "grammar", "verb -> participle", dedupe([(v, pp) for v, _, pp in past]),
               ("What is the past participle of {x}?", "Write the past participle of the verb."),
               ("Give the participle form of {x}.",)),
        Family("third_person", "grammar", "verb -> he form", dedupe(list(F.VERBS_PRESENT.items())),
               ("What is the third person singular of {x}?", "Write the verb as it goes after he."),
               ("How do you say {x} after she?",)),
        Family("base_form", "grammar", "he form -> verb", dedupe(list(third.items())),
               ("What is the base form of {x}?", "Write the base form of the verb."), ("Give the plain form of {x}.",)),
        Family("negate", "grammar", "sentence -> negation",
               dedupe([(f"{s} {t} {o}", f"{s} does not {v} {o}") for s, v, t, o in _agreement()]),
               ("Make this sentence negative.", "Rewrite the sentence with not."), ("Say the opposite of this sentence with not.",)),
        Family("question", "grammar", "sentence -> yes/no question",
               dedupe([(f"{s} {t} {o}", f"does {s} {v} {o}?") for s, v, t, o in _agreement()]),
               ("Turn this sentence into a question.", "Rewrite the sentence as a yes or no question."),
               ("Ask a question that this sentence answers with yes.",)),
    ]


def _words() -> list[Family]:
    def lists(name: str, k: int = 3, distinct_first: bool = False) -> list[list[str]]:
        return word_lists(name, 150, k, distinct_first)

    return [
        Family("first_word", "words", "list -> first word", dedupe([(" ".join(w), w[0]) for w in lists("first_word")]),
               ("What is the first word of the list?", "Give the first of these words."), ("Which word comes first here?",)),
        Family("last_word", "words", "list -> last word", dedupe([(" ".join(w), w[-1]) for w in lists("last_word")]),
               ("What is the last word of the list?", "Give the last of these words."), ("Which word comes last here?",)),
        Family("second_word", "words", "list -> second word", dedupe([(" ".join(w), w[1]) for w in lists("second_word")]),
               ("What is the second word of the list?", "Give the second of these words."),
               ("Which word is in the middle here?",)),
        Family("count_words", "words", "list -> word count",
               dedupe([(" ".join(w), str(len(w))) for k in (2, 3, 4, 5) for w in word_lists(f"count_words{k}", 40, k)]),
               ("How many words are in the list?", "Count the words."), ("Tell me the number of words here.",)),
        Family("reverse_order", "words", "list -> reversed list",
               dedupe([(" ".join(w), " ".join(w[::-1])) for w in lists("reverse_order")]),
               ("Write the words in reverse order.", "Reverse the order of these words."),
               ("List these words from last to first.",)),
        Family("sort_words", "words", "list -> alphabetical",
               dedupe([(" ".join(w), " ".join(sorted(w))) for w in lists("sort_words", distinct_first=True)]),
               ("Sort these words alphabetically.", "Put the words in alphabetical order."),
               ("Arrange the words from A to Z.",)),
        Family("join_and", "words", "list -> a, b and c",
               dedupe([(" ".join(w), f"{w[0]}, {w[1]} and {w[2]}") for w in lists("join_and")]),
               ("Join the words into a list with and.", "Write the words as a list ending in and."),
               ("Connect these words with commas and and.",)),
        Family("drop_first", "words", "list -> all but the first",
               dedupe([(" ".join(w), " ".join(w[1:])) for w in lists("drop_first")]),
               ("Remove the first word.", "Write the list without its first word."), ("Leave out the first word.",)),
    ]


def build_families() -> list[Family]:
    """Every family, seen and held out, in catalogue order."""
    return [*_lookup(), *_spelling(), *_arithmetic(), *_grammar(), *_words(),
            *(composition(i, o, False) for i, o in SEEN_COMPOSITIONS),
            *(composition(i, o, True) for i, o in HELD_OUT_COMPOSITIONS)]


HELD_OUT: tuple[str, ...] = tuple(f.name for f in build_families() if f.held_out)


def catalogue() -> str:
    """A markdown table of every family: cluster, skill, split, one example."""
    lines = ["| family | cluster | skill | split | example instruction | input | output |", "|---|---|---|---|---|---|---|"]
    for f in build_families():
        x, y = f.pairs[0]
        phrasing = f.phrasings[0]
        instruction, inp = (phrasing.format(x=x), "") if "{x}" in phrasing else (phrasing, x)
        lines.append(f"| {f.name} | {f.cluster} | {f.skill} | {'held out' if f.held_out else 'seen'} | "
                     f"{instruction} | {inp} | {y} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalogue())
