"""The train ↔ evaluation overlap audit (data/overlap.py): normalisation, exact / same-prompt / near-duplicate
matches with their true Jaccard, and decontamination through the data module."""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA

from instructune.data.datamodule import InstructionDataModule
from instructune.data.overlap import OverlapSpec, audit_overlap, normalise, shingles
from instructune.data.records import InlineSource

LONG = ("the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the door "
        "and the bird sings a song about the spring morning light")


def _rec(instruction, output, input_=""):
    return {"instruction": instruction, "input": input_, "output": output}


def _splits():
    train = [
        _rec("What is the capital of France?", "Paris"),                  # 0: exact duplicate of test 0
        _rec("Add 9 and 6.", "15"),                                       # 1: same prompt as validation 0
        _rec("Retell this.", LONG),                                       # 2: near duplicate of test 1
        _rec("What is 9 + 6?", "15"),                                     # 3: clean (test 2 asks 9 - 6)
        _rec("Name a colour.", "blue"),                                   # 4: clean
    ]
    validation = [_rec("add 9 and 6", "fifteen"), _rec("Name a fruit.", "apple")]
    test = [_rec("what is the CAPITAL of france", "paris."), _rec("Retell this.", LONG.replace("warm", "soft")),
            _rec("What is 9 - 6?", "3")]
    return {"train": train, "validation": validation, "test": test}


def test_normalisation_ignores_case_spacing_and_sentence_punctuation_but_keeps_operators():
    assert normalise("  What is  the Capital of FRANCE? ") == "what is the capital of france"
    assert normalise("What is 9 + 6?") != normalise("What is 9 - 6?")
    assert normalise("ﬁne, (really)!") == "fine really"  # NFKC folds the ligature
    assert shingles("a b c d", 3) == frozenset({"a b c", "b c d"}) and shingles("a b", 3) == frozenset({"a b"})


def test_the_audit_finds_exact_same_prompt_and_near_duplicates_and_nothing_else():
    audit = audit_overlap(_splits())
    # the counts overlap: an exact duplicate has the same prompt too, and test 1 asks train 2's "Retell this."
    # "retell this ¶ ¶" + LONG's 31 words: 33 3-grams, changing one word replaces 3 of them: Jaccard 30 / 36
    assert audit.report["test"] == {"records": 3, "exact": 1, "same_prompt": 2, "near": 1, "contaminated": 2,
                                    "fraction": round(2 / 3, 4), "in_validation": 0}
    assert audit.report["validation"] == {"records": 2, "exact": 0, "same_prompt": 1, "near": 0, "contaminated": 1,
                                          "fraction": 0.5}
    assert audit.train_indices == {0, 1, 2} and audit.report["train_records_involved"] == 3
    near = next(e for e in audit.report["examples"] if e["train_index"] == 2)
    assert near["jaccard"] == round(30 / 36, 3) and near["split"] == "test" and near["index"] == 1
    # one word changed in a short text is no near duplicate at threshold 0.8, a looser threshold finds it
    short = {"train": [_rec("Retell this.", "a b c d e f")], "test": [_rec("Retell this.", "a b c d e g")]}
    assert audit_overlap(short).report["test"]["near"] == 0
    assert audit_overlap(short, OverlapSpec(threshold=0.6)).report["test"]["near"] == 1  # Jaccard 7 / 9
    # fields stay apart: ("a b", "") is not ("a", "b"); records without a word match nothing; test in validation
    edge = {"train": [_rec("a b", "x"), _rec("?", "!")], "validation": [_rec("Name a fruit.", "apple")],
            "test": [_rec("a", "x", "b"), _rec("...", "?"), _rec("name a fruit", "apple")]}
    report = audit_overlap(edge).report["test"]
    assert (report["exact"], report["same_prompt"], report["in_validation"]) == (0, 0, 1)
    from instructune.data.overlap import record_texts
    assert record_texts(_rec("?", "yes")) == ("", "¶  ¶ yes")  # a wordless prompt matches no other prompt
    assert audit_overlap(edge, OverlapSpec(enabled=False)).report == {"method": None}


def test_decontaminate_drops_the_involved_training_records_and_leaves_no_overlap(word_tokenizer):
    splits = _splits()
    data = InstructionDataModule(InlineSource(splits), word_tokenizer, "alpaca", decontaminate=True)
    data.setup("fit")
    assert [r["output"] for r in data.records["train"]] == ["15", "blue"]  # records 3 and 4
    assert data.overlap_report["decontaminated"] == 3 and len(data.examples["train"]) == 2
    assert audit_overlap(data.records).report["test"]["contaminated"] == 0
    kept = InstructionDataModule(InlineSource(_splits()), word_tokenizer, "alpaca")
    kept.setup("fit")
    assert len(kept.records["train"]) == 5 and kept.overlap_report["decontaminated"] == 0


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data/instruction-data.json is absent")
def test_the_book_data_shares_prompts_between_its_splits():
    """The LLMs-from-scratch set repeats instructions with reworded answers ("What is the capital of Germany?"):
    under the seeded 85/10/5 split the audit finds them in validation and test."""
    from instructune.data.records import DatasetSource

    splits = DatasetSource(str(SHARED_DATA), seed=42).load()  # data=instruction_data at the default seed
    report = audit_overlap(splits).report
    assert {k: len(v) for k, v in splits.items()} == {"train": 935, "validation": 110, "test": 55}
    assert report["validation"] == {"records": 110, "exact": 0, "same_prompt": 6, "near": 2, "contaminated": 6,
                                    "fraction": 0.0545}
    assert report["test"] == {"records": 55, "exact": 0, "same_prompt": 1, "near": 1, "contaminated": 1,
                              "fraction": 0.0182, "in_validation": 2}
    assert report["train_records_involved"] == 8
    first = report["examples"][0]  # "Suggest a more formal synonym for happy": joyful in validation, content in train
    assert (first["split"], first["jaccard"]) == ("validation", 0.833) and "synonym for happy" in first["train_text"]


def test_the_embedded_world_has_no_overlap_between_training_and_evaluation():
    from instructune.world.source import WorldSource

    report = audit_overlap(WorldSource(seed=0, version=2).load()).report
    assert (report["validation"]["records"], report["validation"]["contaminated"]) == (281, 0)
    assert (report["test"]["records"], report["test"]["contaminated"]) == (706, 0)
