import ast
import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from instructune.data.prompts import make_prompt_style
from instructune.world.facts import CAPITALS
from instructune.world.generator import (HELD_OUT_TASKS, build_tasks, corpus_documents, corpus_sentences,
                                         instruction_splits)
from instructune.world.pretraining import (GPT2_CONFIG, GPT2_RECIPE, T5_CONFIG, T5_OBJECTIVE, T5_RECIPE, VOCAB_SIZE,
                                           prefix_lm_records, tokenizer_texts)
from instructune.world.source import WORLD_GPT2, WORLD_T5, WorldSource


def test_splits_are_deterministic_and_held_out_families_only_in_test():
    a, b = instruction_splits(0), instruction_splits(0)
    assert a == b and instruction_splits(1) != a
    train_tasks = {r["task"] for r in a["train"]}
    test_tasks = Counter(r["task"] for r in a["test"])
    assert set(HELD_OUT_TASKS) == {"country_of_capital", "singular", "animal_of_sound"}
    assert not train_tasks & set(HELD_OUT_TASKS) and not {r["task"] for r in a["validation"]} & set(HELD_OUT_TASKS)
    # 20 items of each held-out family, one phrasing each, alongside 10% of every seen family's items
    assert {t: test_tasks[t] for t in HELD_OUT_TASKS} == {t: 20 for t in HELD_OUT_TASKS}
    assert {k: len(v) for k, v in a.items()} == {"train": 1766, "validation": 109, "test": 169}
    assert train_tasks == {t.name for t in build_tasks()[0]}


def _item(record, tasks):
    """Recover the question item x from a record: its input, or the {x} slot of its phrasing."""
    if record["input"]:
        return record["input"]
    for phrasing in tasks[record["task"]].phrasings:
        m = re.fullmatch(re.escape(phrasing).replace(re.escape("{x}"), "(.+)"), record["instruction"])
        if m:
            return m.group(1)
    raise AssertionError(record)


def test_test_questions_never_appear_in_training():
    s = instruction_splits(0)
    tasks = {t.name: t for group in build_tasks() for t in group}
    items = {split: {(r["task"], _item(r, tasks)) for r in s[split]} for split in s}
    assert items["test"].isdisjoint(items["train"]) and items["validation"].isdisjoint(items["train"])
    assert len(items["test"]) == len(s["test"])


def test_several_phrasings_per_task_and_both_alpaca_variants():
    s = instruction_splits(0)["train"]
    tasks = {t.name: t for t in build_tasks()[0]}
    used = {}
    for r in s:  # the phrasing each record was written from
        item = _item(r, tasks)
        phrasing = r["instruction"] if r["input"] else next(
            p for p in tasks[r["task"]].phrasings if "{x}" in p and p.format(x=item) == r["instruction"])
        used.setdefault(r["task"], set()).add(phrasing)
    # every phrasing of every seen task (2 to 5 of them) occurs in training
    assert used == {name: set(t.phrasings) for name, t in tasks.items()}
    assert min(len(t.phrasings) for t in tasks.values()) == 2
    # both Alpaca variants: the item in the input section (990 records) or inside the instruction (776)
    assert (sum(1 for r in s if r["input"]), sum(1 for r in s if not r["input"])) == (990, 776)


def test_corpus_is_plain_sentences_not_instructions():
    docs = corpus_documents(0, 50)
    text = " ".join(docs)
    assert "### " not in text and "Instruction" not in text
    # documents of 6 sentences joined by a space or line breaks: every fact once, then 50 * 6 more
    sentences = corpus_sentences(0, 50 * 6)
    assert [s for d in docs for s in re.split(r"(?<=\.)(?: |\n\n|\n)", d)] == sentences
    assert len(docs) == -(-len(sentences) // 6) and len(sentences) == 3863 + 300
    # e.g. every capital is stated, in one of its phrasings
    assert all(any(country in s and capital in s for s in sentences) for country, capital in CAPITALS.items())


def test_world_source_validates_and_keeps_task():
    splits = WorldSource(version=1, max_train_records=10).load()  # the first world (the studies' version)
    assert splits["train"] == instruction_splits(0)["train"][:10]  # the first 10, validated and unchanged
    assert splits["train"][0] == {"instruction": "Turn the following active sentence into a passive one.",
                                  "input": "the boy found the window", "output": "the window was found by the boy",
                                  "task": "passive"}
    assert {k: len(v) for k, v in splits.items()} == {"train": 10, "validation": 109, "test": 169}


def test_the_committed_base_and_its_tokenizer():
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(WORLD_GPT2)
    assert (config.model_type, config.n_layer, config.n_embd, config.vocab_size) == ("gpt2", 4, 128, 2048)
    tok = AutoTokenizer.from_pretrained(WORLD_GPT2)
    # An answer tokenised on its own (as after "### Response:\n") equals the word inside a sentence.
    alone = tok("Paris", add_special_tokens=False)["input_ids"]
    inside = tok("The capital of France is Paris.", add_special_tokens=False)["input_ids"]
    assert alone == [1394]
    assert tok.convert_ids_to_tokens(inside) == ["ĠThe", "Ġcapital", "Ġof", "ĠFrance", "Ġis", "ĠParis", "."]
    # ... and an input word on its own line (as after "### Input:\n") is that same token too
    after_newline = tok("### Input:\nParis\n\n### Response:\n", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(after_newline) == ["Ġ###", "ĠInput", ":", "ĠĊ", "ĠParis", "ĠĊĊ", "Ġ###", "ĠResponse",
                                                        ":", "ĠĊ"] and after_newline[4] == 1394
    assert tok.decode(tok("one line\nParis\n\nend", add_special_tokens=False)["input_ids"]).strip() == "one line\nParis\n\nend"
    assert tok.pad_token_id == tok.eos_token_id == 0 and tok.eos_token == "<|endoftext|>"
    assert tok.chat_template == ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
                                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_prefix_lm_records_split_documents_at_sentence_boundaries():
    records = prefix_lm_records(["One cat, two cats. The dog says woof. Paris is the capital of France."], seed=0,
                                denoise_fraction=0.0)
    assert len(records) == 1
    r = records[0]
    assert r["instruction"] + " " + r["output"] == "One cat, two cats. The dog says woof. Paris is the capital of France."
    assert r["instruction"].endswith(".") and r["output"].endswith(".")


def test_denoising_records_delete_words_and_ask_for_the_whole_document():
    doc = "the cat sees the dog and the dog sees the cat near the old red house by the river"
    records = prefix_lm_records([doc] * 50, seed=0, denoise_fraction=1.0)
    assert len(records) == 50 and all(r["output"] == doc for r in records)
    for r in records:
        it = iter(doc.split(" "))
        assert all(word in it for word in r["instruction"].split(" "))  # words deleted in order, none added
    # each word deleted with probability 0.15: with seed 0, 796 of the 50 * 19 words are kept (16.2% deleted)
    assert sum(len(r["instruction"].split(" ")) for r in records) == 796 and 50 * len(doc.split(" ")) == 950


def test_tokenizer_texts_are_the_corpus_then_prompts_in_every_fixed_style():
    """The tokenizer sees each template style (alpaca, phi3, flan: not the user-defined ones) around
    2,000 records, so their prompt words are whole tokens."""
    docs = ["The capital of France is Paris.", "A cow says moo."]
    texts = tokenizer_texts(0, docs)
    assert texts[:2] == docs and len(texts) == 2 + 3 * 2000
    alpaca, phi3, flan = texts[2], texts[2 + 2000], texts[2 + 4000]
    # the same first record (the train split's first) in each style, its answer right after the prompt
    assert alpaca == ("Below is an instruction that describes a task, paired with an input that provides further "
                      "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                      "Turn the following active sentence into a passive one.\n\n### Input:\nthe boy found the window"
                      "\n\n### Response:\nthe window was found by the boy")
    assert phi3 == ("<|user|>\nTurn the following active sentence into a passive one.\n\nthe boy found the window<|end|>\n"
                    "<|assistant|>\nthe window was found by the boy")
    assert flan == ("Instruction: Turn the following active sentence into a passive one.\nInput: the boy found the window"
                    "\nResponse:the window was found by the boy")
    records = [r for split in instruction_splits(0).values() for r in split][:2000]
    assert texts[2:2002] == [make_prompt_style("alpaca").format(r["instruction"], r["input"]) + r["output"]
                             for r in records]


@pytest.mark.parametrize(("asset", "config", "recipe"), [(WORLD_GPT2, GPT2_CONFIG, GPT2_RECIPE),
                                                         (WORLD_T5, T5_CONFIG, T5_RECIPE)])
def test_the_described_bases_are_the_committed_ones(asset, config, recipe):
    """The build tool's defaults reproduce the committed weights: same architecture, same recipe."""
    committed = json.loads((asset / "config.json").read_text())
    assert {k: committed[k] for k in config} == config and committed["vocab_size"] == VOCAB_SIZE
    info = json.loads((asset / "build_info.json").read_text())
    # every recipe field is recorded (block_size only for the GPT-2 base, whose training blocks it sizes)
    recorded = set(dataclasses.asdict(recipe)) - ({"block_size"} if asset == WORLD_T5 else set())
    assert {k: info[k] for k in recorded} == {k: v for k, v in dataclasses.asdict(recipe).items() if k in recorded}
    assert (info["parameters"], info["vocab_size"]) == ({WORLD_GPT2: 1088256, WORLD_T5: 1181440}[asset], VOCAB_SIZE)
    if asset == WORLD_T5:
        assert info["objective"] == T5_OBJECTIVE


def test_the_world_imports_no_model_or_training_code():
    """Runs load the world's committed files; building them is tools/build_world.py's job alone."""
    world = Path(__file__).resolve().parents[1] / "src" / "instructune" / "world"
    forbidden = ("instructune.models", "instructune.train", "instructune.cli", "instructune.entry", "lightning")
    offenders = {}
    for f in world.rglob("*.py"):
        tree = ast.parse(f.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if bad := sorted(m for m in names if m.startswith(forbidden)):
            offenders[f.name] = bad
    assert offenders == {}
