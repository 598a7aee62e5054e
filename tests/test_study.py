"""The study engine (every arm at its own tuned learning rate, chosen on validation; then seeds x budgets
on test) and its report, on tiny settings through the real entry point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import study_script
from instructune.study import bracketed, validation_key


def test_the_best_rate_and_whether_the_grid_brackets_it():
    assert bracketed({1e-3: (0.1,), 1e-2: (0.3,), 1e-1: (0.2,)}) == (1e-2, None)
    assert bracketed({1e-3: (0.4,), 1e-2: (0.3,), 1e-1: (0.2,)}) == (1e-3, "low")
    assert bracketed({1e-3: (0.1,), 1e-2: (0.3,), 1e-1: (0.5,)}) == (1e-1, "high")
    # a tie between an edge and the middle goes to the middle: a tie is no evidence of an edge
    assert bracketed({1e-3: (0.3,), 1e-2: (0.3,), 1e-1: (0.2,)}) == (1e-2, None)


def test_validation_scores_order_ties_by_rouge_then_loss():
    def summary(em, rouge, loss):
        return {"selection": {"tuned": {"all": em, "rougeL/all": rouge}}, "metrics": {"val/loss": loss}}

    ranked = sorted([summary(0.5, 0.6, 1.0), summary(0.5, 0.7, 2.0), summary(0.5, 0.7, 1.5), summary(0.4, 0.9, 0.1)],
                    key=validation_key, reverse=True)
    assert [(s["selection"]["tuned"]["rougeL/all"], s["metrics"]["val/loss"]) for s in ranked] == [
        (0.7, 1.5), (0.7, 2.0), (0.6, 1.0), (0.9, 0.1)]
    assert validation_key({}) == (-math.inf, -math.inf, -math.inf)  # a run without scores ranks last




def test_the_studies_designs():
    masking = study_script("masking_study")
    assert [(a.name, a.overrides) for a in masking.DESIGN.arms] == [
        ("λ=0", ("loss.prompt_weight=0",)), ("λ=0.01", ("loss.prompt_weight=0.01",)),
        ("λ=0.1", ("loss.prompt_weight=0.1",)), ("λ=0.5", ("loss.prompt_weight=0.5",)), ("λ=1", ("loss.prompt_weight=1",))]
    assert (masking.DESIGN.budgets, masking.DESIGN.seeds) == ((150, 300, 600), (0, 1, 2, 3, 4))
    peft = study_script("peft_study")
    gpt2 = peft.design("gpt2")
    assert [a.name for a in gpt2.arms] == ["full", "lora", "prefix", "prompt", "ia3", "bitfit"]
    assert (gpt2.budgets, gpt2.seeds, gpt2.baseline) == ((100, 200, 400), (0, 1, 2, 3, 4), "full")
    # each strategy's grid is its own default (conf/peft) times 1/3, 1, 3
    assert {a.name: a.lr_grid for a in gpt2.arms}["full"] == pytest.approx((1e-3 / 3, 1e-3, 3e-3))
    assert {a.name: a.lr_grid for a in gpt2.arms}["prompt"] == pytest.approx((1e-2, 3e-2, 9e-2))
    assert [a.name for a in peft.design("t5").arms] == ["full", "lora", "prefix", "prompt", "ia3"]
    assert peft.design("t5", quick=True).budgets == (5, 10, 20)


@pytest.mark.slow
def test_the_quick_masking_study_end_to_end(tmp_path):
    """``run.py --quick`` (two of its arms): tuning sweeps, final sweeps and the report, through the real
    entry point; the choices and the report's numbers checked against the runs' own summaries."""
    report = study_script("masking_study").main(["--quick", "--arms", "λ=0", "λ=1", "--out", str(tmp_path)])
    study = json.loads((tmp_path / "study.json").read_text())
    assert list(study["tuning"]) == list(study["final"]) == ["λ=0", "λ=1"]
    for arm, tuned in study["tuning"].items():
        assert {3e-3, 1e-2, 3e-2} <= {round(lr, 8) for lr in tuned["grid"]}  # the starting grid, maybe extended
        summaries = {r["lr"]: json.loads((Path(r["run"]) / "summary.json").read_text()) for r in tuned["runs"]}
        grid = sorted(summaries)
        # the chosen rate has the best validation score (ties: the one nearest the grid's middle)
        best = max(validation_key(summaries[lr]) for lr in grid)
        assert validation_key(summaries[tuned["lr"]]) == best
        assert (tuned["edge"] is None) == (grid[0] < tuned["lr"] < grid[-1])
        assert all(s["config"]["seed"] == 1000 and s["steps"] == 20 for s in summaries.values())
        finals = [json.loads((Path(run) / "summary.json").read_text()) for run in study["final"][arm]]
        assert sorted(f["config"]["seed"] for f in finals) == [0, 1] and {f["lr"] for f in finals} == {tuned["lr"]}
        assert all(sorted(f["budgets"]) == ["10", "20", "5"] for f in finals)
    text = report.read_text()
    assert report == tmp_path / "report.md" and (tmp_path / "learning_curves.png").is_file()
    # the report's exact match at 20 steps is the mean over seeds x items: the mean of the runs' own test scores
    finals = [json.loads((Path(run) / "summary.json").read_text()) for run in study["final"]["λ=1"]]
    mean = sum(f["budgets"]["20"]["test"]["all"] for f in finals) / 2
    row = next(line for line in text.split("### 20 steps")[1].splitlines() if line.startswith("| λ=1 |"))
    cells = row.split(" | ")
    assert cells[2] == "2" and cells[4].startswith(f"{100 * mean:.1f}% (")
    validation = sum(f["budgets"]["20"]["selection"]["all"] for f in finals) / 2
    assert cells[3] == f"{100 * validation:.1f}%"
