"""Choose on validation, report on test: the selection split's scores, its learning curve during
training, the best checkpoint chosen by it and restored before the test split, and the checks."""

from __future__ import annotations

import json

import pytest

from conftest import compose_train_config, train_in_process
from instructune.config_check import ConfigError
from instructune.selection import check_selection

QUICK = ["trainer.max_steps=8", "trainer.val_check_interval=8", "data.source.max_train_records=64",
         "eval.max_examples=8", "eval.max_new_tokens=4", "logger=none", "eval.base=false", "export=false",
         "eval.selection_max_examples=12"]


@pytest.mark.parametrize("overrides, message", [
    (["eval.every_n_steps=4", "eval.selection_split=null"], "eval.every_n_steps=4 needs eval.selection_split"),
    (["checkpoint=best"], "checkpoint=best monitors validation exact match"),
    (["eval.restore_best=true"], "eval.restore_best=true needs checkpoint=best"),
])
def test_selection_settings_that_cannot_work_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_selection(compose_train_config(*overrides))


def test_the_defaults_select_on_validation_and_report_on_test():
    cfg = compose_train_config()
    check_selection(cfg)
    assert (cfg.eval.split, cfg.eval.selection_split, cfg.eval.every_n_steps) == ("test", "validation", None)


@pytest.mark.slow
def test_learning_curve_and_the_best_checkpoint_restored_before_testing(tmp_path):
    proc = train_in_process(*QUICK, "eval.every_n_steps=3", "checkpoint=best", "eval.restore_best=true",
                            f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    selection = summary["selection"]
    assert summary["status"] == "ok" and selection["split"] == "validation"
    # every 3 steps, and after the last one (8)
    assert [p["step"] for p in selection["curve"]] == [3, 6, 8] and {p["n"] for p in selection["curve"]} == {12}
    # validation holds seen families only, but a short run trains on some of them (QUICK's few records): the
    # others count as held out; no validation item is paraphrased
    assert set(selection["curve"][0]) == {"step", "n", "all", "seen", "held_out", "rougeL/all", "chrf/all"}
    # the restored checkpoint is the first saved step (3, 6) with the best validation exact match (ties keep
    # the earlier); the last step (8, scored but not saved) wins only when it beats them all
    saved = selection["curve"][:2]
    best = max(p["all"] for p in saved)
    first_best = next(p["step"] for p in saved if p["all"] == best)
    if selection["curve"][-1]["all"] > best:
        first_best, best = 8, selection["curve"][-1]["all"]
    else:
        assert (tmp_path / "checkpoints" / f"best-{first_best}.ckpt").is_file()
    assert selection["restored"]["step"] == first_best
    assert selection["restored"]["val_gen/exact_match"] == pytest.approx(best)
    # the final selection score is of the model that was tested (the restored one)
    # the final selection score is of the model that was tested (the restored one): the same answers as
    # at its step, so the same ROUGE-L and chrF (continuous: a different step's weights would differ)
    at_best = next(p for p in selection["curve"] if p["step"] == first_best)
    assert selection["tuned"]["n"] == 12
    assert {k: selection["tuned"][k] for k in ("all", "rougeL/all", "chrf/all")} == pytest.approx(
        {k: at_best[k] for k in ("all", "rougeL/all", "chrf/all")})
    assert first_best == 8 or at_best["chrf/all"] != selection["curve"][-1]["chrf/all"]
    assert summary["eval"]["tuned"]["n"] == 8


@pytest.mark.slow
def test_a_plain_run_scores_the_selection_split_once_without_a_curve(tmp_path):
    assert train_in_process(*QUICK, f"hydra.run.dir={tmp_path}").returncode == 0
    selection = json.loads((tmp_path / "summary.json").read_text())["selection"]
    assert selection["tuned"]["n"] == 12 and selection["curve"] == [] and selection["restored"] is None


@pytest.mark.slow
def test_budgets_score_the_test_split_as_runs_stopped_there_would(tmp_path):
    """At a constant learning rate after the same fixed warm-up (2 steps; a ratio would give the 8- and
    6-step runs different warm-ups), the 8-step run's answers at step 6 are the answers of a run that stops
    at step 6: one run gives a study all its training budgets."""
    constant = ["optimizer.schedule=constant", "optimizer.warmup_steps=2"]
    assert train_in_process(*QUICK, *constant, "eval.budgets=[3,6]", f"hydra.run.dir={tmp_path / 'long'}").returncode == 0
    assert train_in_process(*QUICK, *constant, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'short'}").returncode == 0
    long = json.loads((tmp_path / "long" / "summary.json").read_text())
    assert sorted(long["budgets"]) == ["3", "6"]
    assert {(b["test"]["n"], b["selection"]["n"]) for b in long["budgets"].values()} == {(8, 12)}
    rows = [json.loads(line) for line in (tmp_path / "long" / "predictions.jsonl").read_text().splitlines()]
    short = [json.loads(line) for line in (tmp_path / "short" / "predictions.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"tuned@3", "tuned@6", "tuned"}
    assert [r["tuned@6"] for r in rows] == [r["tuned"] for r in short]
    assert long["budgets"]["6"]["test"] == json.loads((tmp_path / "short" / "summary.json").read_text())["eval"]["tuned"]


def test_budgets_are_checked():
    with pytest.raises(ConfigError, match=r"eval.budgets=\[3, 900\]: step 900 is beyond trainer.max_steps=800"):
        check_selection(compose_train_config("eval.budgets=[3,900]"))
    with pytest.raises(ConfigError, match="must be a list of steps >= 1"):
        check_selection(compose_train_config("eval.budgets=[0]"))
