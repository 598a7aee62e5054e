"""Training mixtures (data/mixture.py): examples-proportional rates with a cap and temperature, explicit
weights, task balance, the per-epoch draw, and the realised mix the sampler hands to training."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from conftest import train_in_process

from instructune.data.datamodule import InstructionDataModule
from instructune.data.mixture import EpochMix, MixtureSource, MixtureSpec, epoch_counts, make_mixture, mixing_rates
from instructune.data.records import DataError, FieldMap, InlineSource

SIZES = {"a": 300, "b": 60, "c": 12}


def _records(sizes=SIZES):
    words = ["paris", "hello", "hi", "france", "capital"]
    return [{"instruction": f"say {words[i % 5]} {g}", "input": "", "output": words[i % 5], "task": g}
            for g, n in sizes.items() for i in range(n)]


def _data(tokenizer, mixture=None, balance=None, **kw):
    records = _records()
    source = InlineSource({"train": records, "validation": records[:2]}, fields=FieldMap(task="task"))
    return InstructionDataModule(source, tokenizer, {"style": "custom", "template": "{instruction} :"}, batch_size=8,
                                 seed=3, mixture=mixture, balance=balance, **kw)


def test_examples_proportional_rates_follow_the_flan_formula():
    # r_i ∝ min(n_i, K)^(1/T): K=100, T=2 gives 10 : sqrt(60) : sqrt(12)
    rates = mixing_rates(SIZES, MixtureSpec(by="task", cap=100, temperature=2.0))
    total = 10 + math.sqrt(60) + math.sqrt(12)
    assert rates == pytest.approx({"a": 10 / total, "b": math.sqrt(60) / total, "c": math.sqrt(12) / total}, abs=1e-12)
    # no cap, T=1: proportional to size; T=inf: equal shares; weights: as given
    assert mixing_rates(SIZES, MixtureSpec(by="task")) == pytest.approx({"a": 300 / 372, "b": 60 / 372, "c": 12 / 372})
    equal = mixing_rates(SIZES, MixtureSpec(by="task", temperature=math.inf))
    assert equal == pytest.approx(dict.fromkeys(SIZES, 1 / 3))
    weighted = mixing_rates(SIZES, MixtureSpec(by="task", weights={"a": 1, "b": 1, "c": 2}))
    assert weighted == {"a": .25, "b": .25, "c": .5}


def test_epoch_counts_round_by_largest_remainder_to_the_epoch_size():
    # shares of 172: 81.1, 62.8, 28.09 -> floors 81, 62, 28 (171); the largest remainder (b) gets the last one
    total = 10 + math.sqrt(60) + math.sqrt(12)
    rates = {"a": 10 / total, "b": math.sqrt(60) / total, "c": math.sqrt(12) / total}
    assert epoch_counts(rates, 172) == {"a": 81, "b": 63, "c": 28}
    assert epoch_counts({"x": 1 / 3, "y": 1 / 3, "z": 1 / 3}, 10) == {"x": 4, "y": 3, "z": 3}


def test_each_epoch_draws_its_counts_and_every_record_gets_its_turn():
    groups = ["a"] * 300 + ["b"] * 60 + ["c"] * 12
    mix = EpochMix(groups, MixtureSpec(by="task", cap=100, temperature=2.0), seed=3)
    assert mix.epoch_size == 172 and mix.counts == {"a": 81, "b": 63, "c": 28}
    epochs = [mix.indices(e) for e in range(3)]
    for chosen in epochs:
        assert Counter(groups[i] for i in chosen) == Counter(mix.counts)
    first = epochs[0]
    assert len({i for i in first if groups[i] == "a"}) == 81  # 81 of 300: without replacement
    c = Counter(i for i in first if groups[i] == "c")  # 28 of 12: two whole passes and 4 more
    assert sorted(c.values()) == [2] * 8 + [3] * 4
    b = Counter(i for i in first if groups[i] == "b")  # 63 of 60: one pass and 3 more
    assert sorted(b.values()) == [1] * 57 + [2] * 3
    # three epochs: a 243 of 300 drawn once each (none twice before all had a turn), b 189 = 3 x 60 + 9,
    # c 84 = 7 x 12: every record of a group equally often, give or take one
    total = Counter(i for chosen in epochs for i in chosen)
    assert sorted(Counter(total[i] for i in range(300)).items()) == [(0, 57), (1, 243)]
    assert sorted(Counter(total[i] for i in range(300, 360)).items()) == [(3, 51), (4, 9)]
    assert {total[i] for i in range(360, 372)} == {7}
    assert epochs[0] != epochs[1]
    assert EpochMix(groups, MixtureSpec(by="task", cap=100, temperature=2.0), seed=3).indices(1) == epochs[1]  # seeded
    assert EpochMix(groups, MixtureSpec(by="task", cap=100, temperature=2.0), seed=4).indices(1) != epochs[1]


def test_realised_proportions_match_the_configured_ones_within_sampling_error(word_tokenizer):
    """Whole epochs through the real loader hold each group's count exactly; the first 40 examples of an epoch
    (a run stopped mid-epoch) match the rates within 4 standard errors of sampling without replacement."""
    data = _data(word_tokenizer, {"by": "task", "cap": 100, "temperature": 2.0})
    data.setup("fit")
    loader = data.train_dataloader()
    groups = [r["task"] for r in data.records["train"]]
    rates = data.mix.rates
    for epoch in range(3):
        loader.batch_sampler.set_epoch(epoch)
        batches = list(loader.batch_sampler)
        assert sum(len(b) for b in batches) == 172 and len(loader) == 22
        assert Counter(groups[i] for b in batches for i in b) == Counter({"a": 81, "b": 63, "c": 28})
        first = Counter(groups[i] for b in batches[:5] for i in b)
        m, n = 40, 172
        for g, p in rates.items():
            sd = math.sqrt(m * p * (1 - p) * (n - m) / (n - 1))  # hypergeometric
            assert abs(first[g] - m * p) <= 4 * sd, (epoch, g, first[g], m * p)
    # the tally counts what the sampler handed out: 3 epochs of 172
    assert data.mixture_report()["groups"]["c"] == {"records": 12, "rate": round(rates["c"], 6), "per_epoch": 28,
                                                    "drawn": 84}


def test_under_ddp_every_rank_counts_the_global_batch(word_tokenizer, monkeypatch):
    """Rank 0 writes summary.json, so its tally must hold every rank's draws: the global batches (here 2 ranks
    x 8 rows; the epoch's 172 examples wrap around to 176 so both ranks run 11 steps)."""
    from instructune.data.sampler import TrainBatchSampler

    data = _data(word_tokenizer, {"by": "task", "cap": 100, "temperature": 2.0})
    data.setup("fit")
    monkeypatch.setattr(TrainBatchSampler, "_world", staticmethod(lambda: (2, 0)))
    mine = [i for b in data.train_dataloader().batch_sampler for i in b]
    assert len(mine) == 88 and sum(data.tally.drawn.values()) == 176


def test_groups_follow_the_records_that_survive_tokenisation(word_tokenizer):
    records = _records({"a": 6, "b": 4}) + [
        {"instruction": " ".join(["say paris"] * 20), "input": "", "output": "paris", "task": "b"}] * 3
    data = InstructionDataModule(InlineSource({"train": records, "validation": records[:1]}, fields=FieldMap(task="task")),
                                 word_tokenizer, {"style": "custom", "template": "{instruction} :"}, max_seq_length=16,
                                 overlength="drop", mixture={"by": "task"})
    data.setup("fit")
    assert len(data.examples["train"]) == 10 and data.mix.sizes == {"a": 6, "b": 4}  # the 3 long ones dropped


def test_balance_task_gives_every_task_the_same_share(word_tokenizer):
    data = _data(word_tokenizer, balance="task")
    data.setup("fit")
    assert data.mix.counts == {"a": 124, "b": 124, "c": 124}  # 372 per epoch, a third each
    report = data.mixture_report()
    assert report["by"] == "task" and report["temperature"] == "inf" and report["epoch_size"] == 372


def test_unmixed_runs_keep_their_order_and_still_count_draws_per_task(word_tokenizer):
    plain, mixed = _data(word_tokenizer), _data(word_tokenizer, {"by": "task"})
    for d in (plain, mixed):
        d.setup("fit")
    loader = plain.train_dataloader()
    first = [list(b) for b in loader.batch_sampler]
    assert sorted(i for b in first for i in b) == list(range(372))  # every record once, as before mixtures
    assert plain.mix is None and plain.mixture_report() == {
        "by": None, "groups": {"a": {"records": 300, "drawn": 300}, "b": {"records": 60, "drawn": 60},
                               "c": {"records": 12, "drawn": 12}}}
    assert mixed.mix.counts == {"a": 300, "b": 60, "c": 12}  # by task, T=1, no cap: each record once per epoch


def test_bad_mixture_settings_are_one_line_errors(word_tokenizer):
    with pytest.raises(DataError, match="either weights or examples-proportional"):
        make_mixture({"by": "task", "weights": {"a": 1}, "cap": 5}, None)
    with pytest.raises(DataError, match="data.balance=task with data.mixture.by, weights or temperature"):
        make_mixture({"by": "source"}, "task")
    # balance keeps a cap (the default epoch: Σ min(n, K)) and an epoch size
    assert make_mixture({"by": None, "cap": 50, "epoch_size": 90}, "task") == MixtureSpec(
        by="task", temperature=math.inf, cap=50, epoch_size=90)
    with pytest.raises(DataError, match="data.mixture.weights is set but data.mixture.by is null"):
        make_mixture({"weights": {"a": 1}}, None)
    with pytest.raises(DataError, match="data.mixture: got an unexpected keyword argument 'temprature'"):
        make_mixture({"by": "task", "temprature": 2}, None)

    data = _data(word_tokenizer, {"by": "task", "weights": {"a": 1, "b": 2}})
    with pytest.raises(DataError, match="no weight for group.s. c"):
        data.setup("fit")
    typo = _data(word_tokenizer, {"by": "task", "weights": {"a": 1, "b": 1, "c": 1, "cc": 2}})
    with pytest.raises(DataError, match="a weight for cc, which no training record has"):
        typo.setup("fit")
    untasked = InstructionDataModule(InlineSource({"train": _records(), "validation": _records()[:1]}), word_tokenizer,
                                     "alpaca", mixture={"by": "task"})
    with pytest.raises(DataError, match=r"372 of 372 training record\(s\) have no task; map a column"):
        untasked.setup("fit")


def test_a_mixture_source_tags_every_record_with_its_source():
    one = InlineSource({"train": _records({"a": 2}), "test": _records({"a": 1})}, fields=FieldMap(task="task"))
    two = InlineSource({"train": [{"instruction": "say hi", "input": "", "output": "hi"}]})
    splits = MixtureSource({"world": one, "book": two}).load()
    assert [(r["source"], r["task"]) for r in splits["train"]] == [("world", "a"), ("world", "a"), ("book", "book")]
    assert [r["source"] for r in splits["test"]] == ["world"]


@pytest.mark.slow
def test_train_py_mixes_two_files_by_weight_and_reports_the_realised_mix(tmp_path):
    for name, word, n in (("main", "paris", 120), ("extra", "hello", 30)):
        rows = [{"instruction": f"Say {word} number {i}.", "input": "", "output": word} for i in range(n)]
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    run = tmp_path / "run"
    proc = train_in_process(
        "data=json", f"data.path={tmp_path / 'main.json'}", "data.source_name=main",
        f"+data.mix_with.extra={{_target_:instructune.data.DatasetSource,path:'{tmp_path / 'extra.json'}'}}",
        "data.mixture.by=source", "data.mixture.weights={main:1,extra:3}", "data.batch_size=10", "logger=none",
        "trainer.max_steps=6", "trainer.val_check_interval=6", "eval.max_examples=4", "eval.max_new_tokens=2",
        f"hydra.run.dir={run}")
    assert proc.returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    mix = summary["mixture"]
    # 102 + 25 training records (85% of each file); epoch = 127 records, a quarter from main
    assert mix["groups"]["main"]["records"] == 102 and mix["groups"]["extra"]["records"] == 25
    assert (mix["groups"]["main"]["per_epoch"], mix["groups"]["extra"]["per_epoch"]) == (32, 95)
    drawn = mix["groups"]["main"]["drawn"]
    assert drawn + mix["groups"]["extra"]["drawn"] == 60  # 6 steps of 10
    # the first 60 of an epoch's shuffled 127: main expects 60 x 32 / 127, hypergeometric sd 2.45
    assert abs(drawn - 60 * 32 / 127) <= 4 * math.sqrt(60 * (32 / 127) * (95 / 127) * (127 - 60) / 126)
    # 6 + 1 test records, each "Say <word> number <i>." with an i training never saw: no overlap
    assert summary["overlap"]["test"] == {"records": 7, "exact": 0, "same_prompt": 0, "near": 0, "contaminated": 0,
                                          "fraction": 0.0, "in_validation": 0}
