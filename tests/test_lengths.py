"""Records longer than the model can take: max_seq_length is lowered to the model's positions (less
virtual tokens), data.overlength decides what happens to longer records, every cut or dropped record
is counted, and evaluation prompts are cut from the left so prompt + answer fit."""

from __future__ import annotations

import json
import logging
import random

import pytest

from instructune.config_check import ConfigError
from instructune.data.tokenize import OverlengthError, tokenize_pairs
from instructune.models.limits import position_limit
from instructune.models.strategies import STRATEGIES
from instructune.train import fit_to_model

EOS = 0


def test_position_limit_is_read_from_the_config_alone(tiny_dirs):
    assert position_limit(str(tiny_dirs["gpt2"])) == 64  # n_positions
    assert position_limit(str(tiny_dirs["llama"])) == 64  # max_position_embeddings
    assert position_limit(str(tiny_dirs["t5"])) is None  # relative positions: any length
    assert position_limit(None, {"model_type": "gpt2", "n_positions": 1024, "n_layer": 1}) == 1024
    assert position_limit(str(tiny_dirs["gpt2"] / "missing")) is None  # loading the model says why


def test_max_seq_length_is_lowered_to_the_model_less_virtual_tokens(caplog):
    lora, prompt = STRATEGIES["lora"](), STRATEGIES["prompt"](num_virtual_tokens=20)
    with caplog.at_level(logging.INFO, logger="instructune.train"):
        assert fit_to_model(512, 256, lora, "world-gpt2") == 256
    assert caplog.messages == ["data.max_seq_length=512 lowered to 256: model=world-gpt2 takes 256 positions"]
    assert fit_to_model(512, 256, prompt, "world-gpt2") == 236
    assert fit_to_model(128, 256, prompt, "world-gpt2") == 128
    assert fit_to_model(4096, None, prompt, "world-t5") == 4096
    with pytest.raises(ConfigError, match="peft=prompt takes 20 of the 21 positions of model=m"):
        fit_to_model(512, 21, prompt, "m")


@pytest.mark.parametrize(("policy", "kept", "stats"), [
    ("truncate", [[9, 10, 3, 11, 12, 12, 13, 14], [11, 12, 13, 0]], (2, 1, 1, 0)),
    ("drop", [[11, 12, 13, 0]], (1, 0, 0, 2)),
])
def test_overlength_policies(word_tokenizer, policy, kept, stats):
    prompts = ["what ? the say hi", "say hi hello", "what is the capital of france ? q : x y"]
    responses = ["hi hello answer : q a x", "", "z"]
    examples, s = tokenize_pairs(prompts, responses, word_tokenizer, 8, overlength=policy)
    assert [e.input_ids for e in examples] == kept
    assert (s.kept, s.dropped_empty_response, s.truncated, s.dropped_overlength) == stats


def test_overlength_error_names_the_record(word_tokenizer):
    with pytest.raises(OverlengthError, match="record 1 is 9 tokens long, over max_seq_length=8"):
        tokenize_pairs(["say hi", "what is the capital of france ?"], ["hello", "paris"], word_tokenizer, 8,
                       overlength="error")


def _long_records(n: int = 60) -> list[dict[str, str]]:
    """Every third record has a 400-word input (about 800 tokens of the world tokenizer), every fifth
    a 400-word answer: longer than the default base's 256 positions either way."""
    rng = random.Random(0)
    words = "the river opens a small blue house near every green field".split()
    text = lambda k: " ".join(rng.choice(words) for _ in range(k))  # noqa: E731
    return [{"instruction": f"Copy text number {i}.", "input": text(400) if i % 3 == 0 else text(8),
             "output": text(400) if i % 5 == 1 else text(6)} for i in range(n)]


@pytest.mark.slow
def test_own_json_with_records_longer_than_the_default_base_trains(tmp_path):
    from conftest import train_in_process

    data = tmp_path / "long.json"
    data.write_text(json.dumps(_long_records()))
    run = tmp_path / "run"
    result = train_in_process("data=json", f"data.path={data}", "logger=none", "trainer.max_steps=3",
                              "trainer.val_check_interval=3", "eval.max_new_tokens=4", "eval.split=validation",
                              "checkpoint=none", "export=false", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    lengths = summary["lengths"]
    assert (lengths["max_seq_length"], lengths["overlength"]) == (256, "truncate")
    # the 20 long-prompt records are dropped (the prompt alone fills 256 positions); long answers are cut
    # (records 0, 3, ... 57 have long prompts; 1, 6, ... 56 long answers, 4 of which also long prompts)
    assert lengths["dropped"] == {"train": 19, "validation": 1, "test": 0}
    assert lengths["truncated"] == {"train": 6, "validation": 1, "test": 1}
    assert summary["data"] == {"train": 51 - 19, "validation": 6 - 1, "test": 3}
    # every validation record was answered, the long prompt too (cut from the left to fit)
    assert summary["eval"]["tuned"]["n"] == 6
    # eval.split=validation is also the selection split: scored once, the same scores
    assert summary["selection"]["split"] == "validation" and summary["selection"]["tuned"] == summary["eval"]["tuned"]
