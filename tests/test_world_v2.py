"""The version-2 world: 70 families in 6 clusters, held-out compositions, the paraphrase group, the
length knobs (Shi et al. 2024) and the task sampling of the task-count study."""

from __future__ import annotations

import collections
import re

import pytest

from instructune.data.records import DataError
from instructune.eval.metrics import generation_scores, grouped_exact_match, item_group
from instructune.world.families import (HELD_OUT, HELD_OUT_COMPOSITIONS, INNERS, SEEN_COMPOSITIONS,
                                        build_families, catalogue)
from instructune.world.generator import instruction_splits
from instructune.world.source import WorldSource
from instructune.world.splits import CONTEXT_SENTENCES, PARAPHRASE_GROUP, instruction_splits_v2


def test_seventy_families_in_six_clusters_twelve_held_out():
    families = build_families()
    assert len(families) == 70 and len({f.name for f in families}) == 70
    assert collections.Counter(f.cluster for f in families) == {
        "lookup": 7, "spelling": 10, "arithmetic": 12, "grammar": 9, "words": 8, "composition": 24}
    assert len(HELD_OUT) == 12 and all(f.cluster == "composition" for f in families if f.held_out)
    assert HELD_OUT[0] == "upper_of_singular" and HELD_OUT[-1] == "upper_of_capital"
    assert all(len(f.pairs) >= 11 and f.phrasings for f in families)
    assert all(f.paraphrases for f in families if not f.held_out)


def test_held_out_families_are_new_pairings_of_seen_skills():
    assert not set(SEEN_COMPOSITIONS) & set(HELD_OUT_COMPOSITIONS)
    seen_inners = {i for i, _ in SEEN_COMPOSITIONS}
    seen_outers = {o for _, o in SEEN_COMPOSITIONS}
    assert {i for i, _ in HELD_OUT_COMPOSITIONS} <= seen_inners == set(INNERS)
    assert {o for _, o in HELD_OUT_COMPOSITIONS} <= seen_outers
    singles = {f.name for f in build_families() if f.cluster != "composition"}
    # every skill a held-out family combines is also trained on its own (no inverse task is held out)
    single_of = {"upper": "uppercase", "reverse": "reverse", "first_letter": "first_letter",
                 "last_letter": "last_letter", "count_letters": "count_letters", "successor": "successor",
                 "predecessor": "predecessor", "double": "double", "in_words": "in_words", "add": "add_digits",
                 "subtract": "subtract_digits"}
    for inner, outer in HELD_OUT_COMPOSITIONS:
        assert single_of.get(inner, inner) in singles and single_of[outer] in singles


def test_composed_answers_are_the_two_skills_applied_in_turn():
    families = {f.name: f for f in build_families()}
    pairs = dict(families["upper_of_antonym"].pairs)
    assert pairs["hot"] == "COLD" and pairs["cold"] == "HOT"
    assert dict(families["reverse_of_capital"].pairs)["France"] == "siraP"
    assert dict(families["successor_of_add"].pairs)["3 + 4"] == "8"
    assert dict(families["in_words_of_add"].pairs)["9 + 9"] == "eighteen"
    assert dict(families["count_letters_of_singular"].pairs)["mice"] == "5"
    # an outer step that would leave 0-20 drops the item rather than invent an answer
    assert "0 - 0" not in dict(families["predecessor_of_subtract"].pairs)
    held = families["upper_of_singular"]
    assert held.held_out and held.phrasings == ("Write the singular of {x} in capital letters.",
                                                "Find the singular of {x}. Then write it in capital letters.")


def test_splits_cover_every_family_and_keep_test_items_out_of_training():
    splits = instruction_splits_v2(0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8048, "validation": 281, "test": 706}
    test_tasks = {r["task"] for r in splits["test"]}
    assert len(test_tasks) == 70 and {r["task"] for r in splits["train"]} == test_tasks - set(HELD_OUT)
    assert collections.Counter(r["task"] for r in splits["test"] if r["task"] in HELD_OUT) == {t: 12 for t in HELD_OUT}
    train_items = {(r["task"], r["instruction"], r["input"]) for r in splits["train"]}
    families = {f.name: f for f in build_families()}
    for r in splits["test"] + splits["validation"]:
        assert (r["task"], r["instruction"], r["input"]) not in train_items
    # paraphrased items: the same items as the seen-phrasing test items, in a phrasing never trained on
    paraphrased = [r for r in splits["test"] if r["group"] == PARAPHRASE_GROUP]
    plain = [r for r in splits["test"] if not r["group"] and r["task"] not in HELD_OUT]
    assert len(paraphrased) == len(plain) == 281
    train_instructions = {r["instruction"] for r in splits["train"]}
    for r in paraphrased:
        assert r["instruction"] not in train_instructions
        family = families[r["task"]]
        assert any(re.fullmatch(re.escape(p).replace(re.escape("{x}"), ".+"), r["instruction"])
                   for p in family.paraphrases)
    assert collections.Counter((r["task"], r["output"]) for r in paraphrased) == collections.Counter(
        (r["task"], r["output"]) for r in plain)


def test_splits_are_deterministic_by_seed():
    assert instruction_splits_v2(0) == instruction_splits_v2(0)
    assert instruction_splits_v2(0)["test"] != instruction_splits_v2(1)["test"]


def test_length_knobs_change_lengths_not_items():
    plain = instruction_splits_v2(0)
    long = instruction_splits_v2(0, context_sentences=3, answer_style="restate")
    for a, b in zip(plain["train"], long["train"], strict=True):
        assert (a["task"], a["input"]) == (b["task"], b["input"])
        request = a["instruction"] + (f" {a['input']}" if a["input"] else "")
        assert b["output"] == f"The request was: {request} The answer is {a['output']}."
        context = b["instruction"].removesuffix(" " + a["instruction"])
        assert context != b["instruction"]
        sentences = [s + "." for s in context.removesuffix(".").split(". ")]
        assert len(sentences) == 3 and all(s in CONTEXT_SENTENCES for s in sentences)
    with pytest.raises(ValueError, match="answer_style"):
        instruction_splits_v2(0, answer_style="long")  # type: ignore[arg-type]


def test_world_source_versions_and_task_sampling():
    v1 = WorldSource(version=1).load()
    assert [r["instruction"] for r in v1["test"]] == [r["instruction"] for r in instruction_splits(0)["test"]]
    assert "group" not in v1["test"][0]
    v2 = WorldSource().load()
    assert len({r["task"] for r in v2["test"]}) == 70
    assert collections.Counter(r.get("group", "") for r in v2["test"]) == {"": 425, "paraphrase": 281}
    subsets = [{r["task"] for r in WorldSource(train_task_count=k, task_sample_seed=3).load()["train"]}
               for k in (4, 8, 16, 32)]
    assert [len(s) for s in subsets] == [4, 8, 16, 32]
    assert subsets[0] < subsets[1] < subsets[2] < subsets[3]  # nested: k = 8 adds to the k = 4 families
    other = {r["task"] for r in WorldSource(train_task_count=4, task_sample_seed=4).load()["train"]}
    assert other != subsets[0]
    assert WorldSource(train_task_count=4, task_sample_seed=3).load()["test"] == v2["test"]  # test never changes
    with pytest.raises(DataError, match="train_task_count must be between 1 and 58"):
        WorldSource(train_task_count=59).load()
    with pytest.raises(DataError, match="not both"):
        WorldSource(train_tasks=["capital"], train_task_count=4).load()
    with pytest.raises(DataError, match="no training records: upper_of_capital"):
        WorldSource(train_tasks=["capital", "upper_of_capital"]).load()
    with pytest.raises(DataError, match="version must be 1 or 2"):
        WorldSource(version=3).load()
    with pytest.raises(DataError, match=r"world\(seed=0, version=1\): context_sentences and answer_style need version 2"):
        WorldSource(version=1, context_sentences=2).load()


def test_paraphrase_items_are_their_own_evaluation_group():
    assert item_group("capital", "paraphrase", {"capital"}) == "paraphrase"
    assert item_group("capital", None, {"capital"}) == "seen"
    assert item_group("upper_of_capital", "", {"capital"}) == "held_out"
    assert item_group(None, None, {"capital"}) is None
    scores = grouped_exact_match(["Paris", "Rome", "PARIS", "x"], ["Paris", "Paris", "PARIS", "y"],
                                 ["capital", "capital", "upper_of_capital", None], {"capital"},
                                 [None, "paraphrase", None, None])
    assert scores == {"all": 0.5, "seen": 1.0, "paraphrase": 0.0, "held_out": 1.0, "task/capital": 1.0,
                      "task/capital@paraphrase": 0.0, "task/upper_of_capital": 1.0, "n": 4}
    full = generation_scores(["Paris", "Rome"], ["Paris", "Paris"], ["capital", "capital"], {"capital"},
                             [None, "paraphrase"])
    assert full["rougeL/seen"] == 1.0 and full["rougeL/paraphrase"] == 0.0


def test_catalogue_lists_every_family_with_an_example():
    rows = catalogue().splitlines()[2:]
    assert len(rows) == 70
    assert rows[0] == "| capital | lookup | country -> capital | seen | What is the capital of France? |  | Paris |"
    assert rows[-1] == ("| upper_of_capital | composition | upper of capital | held out | Write the capital of France in "
                        "capital letters. |  | PARIS |")


def test_the_committed_catalogue_is_the_generated_one():
    from conftest import REPO

    assert (REPO / "docs" / "world.md").read_text().endswith(catalogue())


def test_per_task_scores_cover_every_family_of_the_default_test_split():
    """What summary.json's eval block holds for the default world: a score per family (and per
    paraphrased family), here with perfect answers so every score is 1."""
    source = WorldSource().load()
    test, seen = source["test"], {r["task"] for r in source["train"]}
    scores = grouped_exact_match([r["output"] for r in test], [r["output"] for r in test], [r["task"] for r in test],
                                 seen, [r.get("group") for r in test])
    families = {k.removeprefix("task/").split("@")[0] for k in scores if k.startswith("task/")}
    assert len(families) == 70 and scores["n"] == 706
    assert sum(k.endswith("@paraphrase") for k in scores) == 58
    assert {k: scores[k] for k in ("all", "seen", "held_out", "paraphrase")} == dict.fromkeys(
        ("all", "seen", "held_out", "paraphrase"), 1.0)
