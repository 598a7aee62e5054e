import pytest
import torch

from instructune.data.tokenizer import load_tokenizer
from instructune.eval.generate import generate
from instructune.eval.metrics import exact_match, grouped_exact_match, normalize
from instructune.models.loading import load_model
from instructune.models.strategies import make_strategy
from instructune.world.source import WORLD_GPT2

PROMPTS = ["The capital of France is", "One cat, two", "The opposite of hot is", "Backwards, tree becomes"]


@pytest.mark.parametrize("strategy", ["lora", "prompt", "prefix"])
def test_batched_left_padded_generation_equals_one_by_one(strategy):
    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    model = make_strategy(strategy, **({} if strategy == "lora" else {"num_virtual_tokens": 3})).apply(
        load_model(str(WORLD_GPT2)), "causal")
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=4)
    single = [generate(model, tokenizer, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert batched == single and all(batched)
    assert tokenizer.padding_side == "right"  # restored for training


def test_the_base_model_knows_its_world():
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    answers = generate(load_model(str(WORLD_GPT2)), tokenizer, ["The capital of France is"], max_new_tokens=2)
    assert answers[0].startswith("Paris")


@pytest.mark.parametrize("strategy", ["lora", "ia3", "prompt", "prefix"])
def test_seq2seq_generation_batched_equals_one_by_one(tiny_dirs, strategy):
    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(tiny_dirs["t5"]))
    params = {"num_virtual_tokens": 3} if strategy in ("prompt", "prefix") else {}
    model = make_strategy(strategy, **params).apply(load_model(str(tiny_dirs["t5"]), "seq2seq"), "seq2seq")
    prompts = ["say hi", "what is the capital of france ?", "q : x y z"]
    batched = generate(model, tokenizer, prompts, "seq2seq", max_new_tokens=4, batch_size=3)
    single = [generate(model, tokenizer, [p], "seq2seq", max_new_tokens=4)[0] for p in prompts]
    assert batched == single and len(batched) == 3


def test_exact_match_normalisation_and_groups():
    assert normalize("  Paris \n") == "paris" and exact_match("the  BALL was kicked", "the ball was kicked")
    assert not exact_match("Paris.", "Paris")
    scores = grouped_exact_match(["a", "b", "c"], ["a", "x", "c"], ["t1", "t1", "t2"], seen_tasks={"t1"})
    assert scores == {"all": 2 / 3, "seen": 0.5, "held_out": 1.0, "task/t1": 0.5, "task/t2": 1.0, "n": 3}


def test_generation_scores_add_rouge_and_chrf_per_group():
    from instructune.eval.metrics import generation_scores

    scores = generation_scores(["the ball was kicked", "Paris"], ["the ball was kicked by the boy", "Paris"],
                               ["passive", "country_of_capital"], seen_tasks={"passive"})
    assert scores["all"] == 0.5 and scores["seen"] == 0.0 and scores["held_out"] == 1.0
    # ROUGE-L F1: 4 common words of 4 and 7 -> 2*1*(4/7)/(1+4/7) = 8/11
    assert scores["rougeL/seen"] == pytest.approx(8 / 11, abs=1e-4)
    assert scores["rougeL/held_out"] == pytest.approx(1.0)
    assert scores["rougeL/all"] == pytest.approx((8 / 11 + 1) / 2, abs=1e-4)
    assert 0 < scores["chrf/seen"] < scores["chrf/all"] <= 1
