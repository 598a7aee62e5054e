"""The task-count and ratio studies on the version-2 world: their designs, the bootstrap line fits
their reports use, and both ``run.py --quick`` end to end through the real entry point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import study_script
from instructune.bootstrap import arm_interval, paired_difference
from instructune.bootstrap_fits import fit, regression
from instructune.study_report import load_arm
from instructune.world.families import HELD_OUT
from instructune.ratio_report import anchor_paragraph
from instructune.world_study_report import item_mask




def test_the_designs():
    count = study_script("task_count_study").DESIGN
    assert [(a.name, a.overrides) for a in count.arms] == [
        (f"k={k}", (f"data.source.train_task_count={k}",)) for k in (4, 8, 16, 32, 58)]
    assert (count.budgets, count.seeds, count.tune_lr) == ((800,), (0, 1, 2), False)
    ratio = study_script("ratio_study")
    assert len(ratio.DESIGN.arms) == 8 and ratio.DESIGN.budgets == (400,)
    assert ratio.CELLS["context N=250 λ=1"] == {"level": "context", "n": 250, "lambda": 1}
    arm = next(a for a in ratio.DESIGN.arms if a.name == "context N=250 λ=1")
    assert arm.overrides == ("data.source.context_sentences=12", "data.source.max_train_records=250",
                             "loss.prompt_weight=1")


def test_line_fit_recovers_an_exact_line_and_its_bootstrap_brackets_it():
    # three cells whose per-item scores lie exactly on mean = 0.1 + 0.2 * x: every resample keeps the line
    cells = [([x], np.full((3, 10), 0.1 + 0.2 * x)) for x in (0.0, 1.0, 2.0)]
    intercept, slope = regression(cells, ("b0", "b1"))
    assert (intercept.estimate, slope.estimate) == pytest.approx((0.1, 0.2))
    assert (slope.low, slope.high) == pytest.approx((0.2, 0.2)) and slope.p == pytest.approx(2 / 2001)
    # noisy 0/1 cells: the estimate is the least-squares fit to the cells' means
    rng = np.random.default_rng(0)
    noisy = [([x], (rng.random((3, 40)) < 0.2 + 0.1 * x).astype(float)) for x in (0, 1, 2, 3)]
    b = regression(noisy, ("b0", "b1"))
    expected = fit(np.array([[1, x] for x in (0, 1, 2, 3)], dtype=float), np.array([c.mean() for _, c in noisy]))
    assert [c.estimate for c in b] == pytest.approx(list(expected))
    assert b[1].low < b[1].estimate < b[1].high
    with pytest.raises(ValueError, match="cannot fit"):
        regression(cells[:2], ("b0", "b1"))


def test_anchor_paragraph_reads_the_signs():
    from instructune.bootstrap_fits import Coefficient

    b0 = Coefficient("b0", 0, 0, 0, 1)
    exact = [b0, Coefficient("r", 0.05, 0.01, 0.09, 0.01), Coefficient("n", 0.02, -0.01, 0.05, 0.3)]
    rouge = [b0, Coefficient("r", -0.05, -0.09, -0.01, 0.02), Coefficient("n", -0.02, -0.03, -0.01, 0.004)]
    text = anchor_paragraph({"exact": exact, "rouge": rouge}, mean_effect=0.03)
    assert ("on exact match, the masking effect moves by +5.0 (+1.0 to +9.0) points per doubling of the ratio "
            "(p 0.010: the direction Shi found) and by +2.0 (-1.0 to +5.0) points per doubling of N (p 0.300: not "
            "distinguishable from zero)") in text
    assert "(p 0.020: against the direction Shi found)" in text and "(p 0.004: the direction Shi found)" in text
    assert "the size of the effect grows with the ratio, as they found" in text
    # a negative mean effect that grows more negative with the ratio also grows in size
    assert "grows with the ratio" in anchor_paragraph({"exact": rouge}, mean_effect=-0.1)
    assert "shrinks as the ratio grows" in anchor_paragraph({"exact": exact}, mean_effect=-0.1)


def test_item_kinds():
    items = [{"task": HELD_OUT[0], "seen": False}, {"task": "capital", "seen": True},
             {"task": "capital", "seen": True, "group": "paraphrase"}, {"task": "plural", "seen": False}]
    assert item_mask(items, "held_out").tolist() == [True, False, False, False]
    assert item_mask(items, "trained").tolist() == [False, True, False, False]
    assert item_mask(items, "paraphrase").tolist() == [False, False, True, False]
    assert item_mask(items, "all").all()


def _row(text: str, first_cell: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |")).split(" | ")


@pytest.mark.slow
def test_the_quick_task_count_study_end_to_end(tmp_path):
    report = study_script("task_count_study").main(["--quick", "--out", str(tmp_path)])
    study = json.loads((tmp_path / "study.json").read_text())
    assert list(study["final"]) == ["k=4", "k=16", "k=58"] and all(t["fixed"] for t in study["tuning"].values())
    text = report.read_text()
    assert (tmp_path / "held_out_by_task_count.png").is_file()
    for arm, k in (("k=4", 4), ("k=58", 58)):
        runs = study["final"][arm]
        summaries = [json.loads((Path(r) / "summary.json").read_text()) for r in runs]
        assert sorted(s["config"]["seed"] for s in summaries) == [0, 1]
        trained = [{line["task"] for line in map(json.loads, (Path(r) / "predictions.jsonl").read_text().splitlines())
                    if line.get("seen") and not line.get("group")} for r in runs]
        assert all(len(t) <= k for t in trained)
        if k == 4:
            assert trained[0] != trained[1]  # each seed draws its own families
        # the report's held-out exact match is the mean over seeds x held-out items of the runs' own answers
        a = load_arm(arm, runs, 10)
        held = a.exact[:, item_mask(a.items, "held_out")]
        assert held.shape == (2, 12 * 12)  # 12 held-out families x 12 items each (held_out_items_per_task)
        assert _row(text, str(k))[4] == f"{100 * arm_interval(held).mean:.1f}% ({100 * arm_interval(held).low:.1f}–" \
                                        f"{100 * arm_interval(held).high:.1f})"
        base = load_arm("base", runs, 10, who="base")
        d = paired_difference(held, base.exact[:, item_mask(base.items, "held_out")])
        assert _row(text, str(k))[6] == f"{100 * d.mean:+.1f} ({100 * d.low:+.1f} to {100 * d.high:+.1f})"
    assert "## Trend" in text and "per doubling of k" in text


@pytest.mark.slow
def test_the_quick_ratio_study_end_to_end(tmp_path):
    report = study_script("ratio_study").main(["--quick", "--out", str(tmp_path)])
    study = json.loads((tmp_path / "study.json").read_text())
    assert len(study["final"]) == 8
    text = report.read_text()
    assert (tmp_path / "masking_effect.png").is_file()
    # the measured ratio of the restate level is below the context level's
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| restate |", "| context |"))]
    assert len(rows) == 4
    ratios = {(r[0].strip("| "), r[2]): float(r[1].split("(")[1].rstrip(")")) for r in rows}
    assert ratios[("restate", "32")] < 3 and ratios[("context", "32")] > 10
    # a cell's Δ is λ=1 minus λ=0 paired by seed and item, over the runs' own answers
    full = load_arm("x", study["final"]["context N=64 λ=1"], 8)
    masked = load_arm("x", study["final"]["context N=64 λ=0"], 8)
    d = paired_difference(full.exact, masked.exact)
    row = next(r for r in rows if r[0] == "| context" and r[2] == "64")
    assert row[5] == f"{100 * d.mean:+.1f} ({100 * d.low:+.1f} to {100 * d.high:+.1f})"
    summaries = [json.loads((Path(r) / "summary.json").read_text()) for r in study["final"]["context N=64 λ=1"]]
    assert all(s["data"]["train"] == 64 for s in summaries)
    assert math.isclose(float(row[1].split("(")[1].rstrip(")")),
                        np.mean([s["lengths"]["tokens"]["train"]["ratio"] for s in summaries]), abs_tol=0.051)
    assert "## Against the anchors" in text and "Shi et al. (2024" in text
