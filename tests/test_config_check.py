"""Every bad setting fails right after composition, before a tokenizer, model or data is loaded, with one
line naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from conftest import REPO
from instructune.config_check import ConfigError, check_config
from instructune.entry import register_resolvers

CASES = {
    "data.batch_size=0": "data.batch_size=0: must be an integer >= 1",
    "data.max_seq_length=0": "data.max_seq_length=0: must be an integer >= 2",
    "data.overlength=cut": "data.overlength='cut': must be truncate, drop or error",
    "trainer.max_steps=0": "trainer.max_steps=0: must be an integer >= 1, or -1 (train for trainer.max_epochs)",
    "trainer.max_steps=-1": ("trainer.max_steps=-1 with trainer.max_epochs=-1: training would never end; set "
                             "trainer.max_steps >= 1 or trainer.max_epochs >= 1"),
    "trainer.accumulate_grad_batches=0": "trainer.accumulate_grad_batches=0: must be an integer >= 1",
    "trainer.precision=8-bit": "trainer.precision='8-bit': must be one of 32-true, 16-mixed, bf16-mixed, 16-true, "
                               "bf16-true, 64-true (Lightning's precision names)",
    "optimizer.lr=-1": "optimizer.lr=-1: must be a number > 0 (or null: the strategy's default)",
    "optimizer.schedule=bogus": "optimizer.schedule='bogus': must be linear, cosine or constant",
    "optimizer.warmup_ratio=1.0": "optimizer.warmup_ratio=1.0: must be a number in [0, 1)",
    "seed=abc": "seed='abc': must be an integer from 0 to 2**32-1",
    "eval.max_examples=0": "eval.max_examples=0: must be an integer >= 1 (or null: the whole split)",
    "eval.split=dev": "eval.split='dev': must be train, validation or test",
    "masking=maybe": "masking='maybe': must be true or false",
    "peft.r=0": "peft.r=0: must be an integer >= 1",
    "model.architecture=encoder": "model.architecture='encoder': must be causal or seq2seq",
    "data.source.max_items_per_task=0": "data.source.max_items_per_task=0: must be an integer >= 1",
    "checkpoint=steps checkpoint.every_n_train_steps=0": "checkpoint.every_n_train_steps=0: must be an integer >= 1",
    "trainer.devices=0": "trainer.devices=0: must be an integer >= 1, auto, or a list of device ids",
    "data.mixture.by=tasks": "data.mixture.by='tasks': must be task or source (or null: no mixing)",
    "data.mixture.cap=0": "data.mixture.cap=0: must be an integer >= 1 (or null: no cap)",
    "data.mixture.temperature=0": "data.mixture.temperature=0: must be a number > 0 (inf: equal shares)",
    "data.balance=source": "data.balance='source': must be task (or null)",
    "data.overlap.threshold=0": "data.overlap.threshold=0: must be a number in (0, 1]",
    "data.decontaminate=yes": "data.decontaminate='yes': must be true or false",
}


def _cfg(*overrides: str):
    register_resolvers()
    with initialize_config_module(config_module="instructune.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("override", sorted(CASES))
def test_bad_settings_are_one_line_naming_key_value_and_allowed(override):
    with pytest.raises(ConfigError) as caught:
        check_config(_cfg(*override.split()))
    assert str(caught.value) == CASES[override]


@pytest.mark.parametrize("overrides", [[], ["peft=prompt"], ["peft=full", "trainer.max_steps=-1", "trainer.max_epochs=2"],
                                       ["model=world-t5", "data=json", "data.path=x.json"], ["trainer=gpu"],
                                       ["trainer=ddp"], ["trainer.devices=[0,1]"], ["checkpoint=steps"]])
def test_the_shipped_settings_pass(overrides):
    check_config(_cfg(*overrides))


def test_an_empty_training_split_is_one_line_before_any_model(word_tokenizer):
    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.records import DataError, InlineSource

    records = [{"instruction": "say hi", "input": "", "output": "hi"}]
    data = InstructionDataModule(InlineSource({"train": [], "validation": records}, name="mine.json"), word_tokenizer)
    with pytest.raises(DataError) as caught:
        data.setup("fit")
    assert str(caught.value) == "mine.json: the train split is empty after loading and filtering; nothing to train on"


def test_a_required_key_left_out_is_one_line():
    with pytest.raises(ConfigError) as caught:
        check_config(_cfg("data=json"))
    assert str(caught.value) == "data.path: required, and not given (e.g. data=json data.path=my.json)"


def test_the_answer_must_leave_room_for_the_prompt():
    from instructune.config_check import check_answer_room

    check_answer_room(32, 236, "world-gpt2")
    check_answer_room(300, None, "world-t5")  # relative positions: no limit
    with pytest.raises(ConfigError) as caught:
        check_answer_room(300, 256, "world-gpt2")
    assert str(caught.value) == ("eval.max_new_tokens=300: model=world-gpt2 has 256 positions for prompt and answer "
                                 "together; set eval.max_new_tokens below 256")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_every_shipped_experiment_passes_the_checks(experiment):
    check_config(_cfg(f"experiment={experiment}"))
