"""The report's statistics against values worked by hand or published, and (where scipy is installed)
against scipy; then the two sections they give a 2-arm × 2-seed sweep report, line by line."""

from __future__ import annotations

import importlib.util
import json
import math
from statistics import NormalDist

import pytest
import yaml

from instructune.bootstrap import arm_interval, paired_difference
from instructune.stats import exact_mcnemar, holm, wilson_interval
from instructune.sweep_report import write_report

Z95 = NormalDist().inv_cdf(0.975)


def test_wilson_at_the_edges_and_the_middle():
    # 0 of n: the upper bound is z² / (n + z²) (solve (0 - p)² = z² p (1 - p) / n), the lower exactly 0
    assert wilson_interval(0, 10) == (0.0, pytest.approx(Z95**2 / (10 + Z95**2)))
    assert round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + Z95**2)), 1.0)
    assert tuple(round(x, 4) for x in wilson_interval(5, 10)) == (0.2366, 0.7634)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    # Newcombe (1998), Statistics in Medicine 17:857, table II, method 3 (Wilson score, no continuity correction)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_matches_published_values(successes, n, low, high):
    assert tuple(round(x, 4) for x in wilson_interval(successes, n)) == (low, high)


@pytest.mark.parametrize(("successes", "n"), [(1, 7), (3, 40), (37, 50), (199, 200)])
def test_wilson_bounds_solve_the_score_equation_and_stay_in_0_1(successes, n):
    """By definition the bounds are the p where |p̂ - p| = z·sqrt(p(1 - p)/n)."""
    p_hat = successes / n
    for p in wilson_interval(successes, n):
        assert 0 <= p <= 1
        assert abs(p_hat - p) == pytest.approx(Z95 * math.sqrt(p * (1 - p) / n), abs=1e-12)
    assert wilson_interval(successes, n, 0.99)[0] < wilson_interval(successes, n)[0]


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_exact_mcnemar_small_cases_by_hand():
    assert exact_mcnemar(0, 5) == exact_mcnemar(5, 0) == 2 / 2**5  # 0.0625
    assert exact_mcnemar(3, 3) == exact_mcnemar(0, 0) == 1.0
    assert exact_mcnemar(4, 5) == 1.0  # doubled tail over 1: capped
    assert exact_mcnemar(1, 9) == 2 * (1 + 10) / 2**10  # 0.021484375
    assert exact_mcnemar(2, 8) == 2 * (1 + 10 + 45) / 2**10  # 0.109375
    assert exact_mcnemar(0, 4) == 0.125


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy not installed")
def test_exact_mcnemar_is_scipys_binomial_test():
    from scipy.stats import binomtest

    for b, c in [(0, 5), (1, 9), (2, 8), (7, 19), (30, 45), (12, 12)]:
        assert exact_mcnemar(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None, reason="statsmodels not installed")
def test_wilson_is_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in [(0, 10), (5, 10), (81, 263), (199, 200)]:
        assert wilson_interval(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-9)


def test_holm_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.02]) == [0.02]
    assert holm([]) == []


ITEMS = [("Write the opposite of the given word.", w, a) for w, a in
         [("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("light", "dark")]]


def _job(root, num, overrides, right, seed_items=ITEMS):
    """A finished job whose tuned model answers the items marked in ``right`` (others wrong); a right
    answer differs from the reference by whitespace only (exact match keeps case)."""
    job = root / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    lines = [{"instruction": i, "input": x, "reference": ref, "task": "antonym",
              "tuned": f"  {ref} " if hit else "no idea"} for (i, x, ref), hit in zip(seed_items, right, strict=True)]
    (job / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    em = sum(right) / len(right)
    (job / "summary.json").write_text(json.dumps({"status": "ok", "eval": {"tuned": {"all": em, "n": len(right)}}}))


def _pct(found) -> str:
    """An interval as the report prints a difference: signed percent points."""
    return f"{100 * found.low:+.1f} to {100 * found.high:+.1f} pp"


def _fmt(p: float) -> str:
    return f"{p:.4f}"


def test_a_two_arm_two_seed_report_prints_wilson_intervals_and_holm_paired_p(tmp_path):
    # baseline 2/5 and 1/5 right, the arm 4/5 and 3/5: c = 2 + 2 discordant pairs for the arm, b = 0;
    # the arm's seed-2 item 5 is a different item (input "night"), so that pair is skipped, leaving 9
    other = [*ITEMS[:4], ("Write the opposite of the given word.", "night", "day")]
    _job(tmp_path, 0, ["peft=lora", "seed=1"], [1, 1, 0, 0, 0])
    _job(tmp_path, 1, ["peft=lora", "seed=2"], [1, 0, 0, 0, 0])
    _job(tmp_path, 2, ["peft=ia3", "seed=1"], [1, 1, 1, 1, 0])
    _job(tmp_path, 3, ["peft=ia3", "seed=2"], [1, 1, 1, 0, 1], other)
    report = write_report(tmp_path).read_text()
    low, high = wilson_interval(3, 10)
    assert (round(100 * low, 1), round(100 * high, 1)) == (10.8, 60.3)
    assert "| `peft=lora` | 2 | 3 / 10 | 30.0% | 10.8% – 60.3% |" in report
    assert "| `peft=ia3` | 2 | 8 / 10 | 80.0% | 49.0% – 94.3% |" in report
    assert "(n = items × seeds) with the 95% Wilson score interval" in report
    # main table: the lora seeds share their items (crossed bootstrap), the ia3 seeds do not (nested)
    lora = arm_interval([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    ia3 = arm_interval([[1, 1, 1, 1, 0], [1, 1, 1, 0, 1]], same_items=False)
    assert (lora.mean, ia3.mean) == (0.3, 0.8)
    assert f"| `peft=lora` | 2 | - | 30.0% ({100 * lora.low:.1f}–{100 * lora.high:.1f}) | - |" in report
    assert f"| `peft=ia3` | 2 | - | 80.0% ({100 * ia3.low:.1f}–{100 * ia3.high:.1f}) | - |" in report
    assert ("n (tuned EM): `peft=lora` 2 seeds × 5 items (the same items for every seed); `peft=ia3` 2 seeds, "
            "10 items (each seed its own items: drawn within each seed).") in report
    # paired over 9 items: baseline 3/9, arm 7/9, b = 0, c = 4: p = 2 / 2**4; one comparison, so Holm = p;
    # the paired bootstrap over seed 1's 5 pairs and seed 2's 4 (different items: nested)
    diff = paired_difference([[1, 1, 1, 1, 0], [1, 1, 1, 0]], [[1, 1, 0, 0, 0], [1, 0, 0, 0]], same_items=False)
    assert diff.p < 0.05 and diff.low > 0
    assert (f"| `peft=ia3` | 9 | 33.3% | 77.8% | +44.4 pp | 0 | 4 | 0.1250 | 0.1250 | {_pct(diff)} | "
            f"{_fmt(diff.p)} | {_fmt(diff.p)} |") in report
    assert "Baseline: `peft=lora` (the first configuration)." in report
    assert "Test: exact McNemar test (two-sided binomial test on the discordant pairs;" in report
    assert "on item-level pairs of tuned answers matched by seed and test item" in report
    assert "And a paired bootstrap of the difference arm − baseline (B = 2000: seeds, then items," in report
    assert "Correction: Holm over the k = 1 comparison(s) in this report, for each test separately." in report
    assert ("n: `peft=ia3`: 9 pairs over seeds 1, 2, 1 skipped (the items at the same seed and index differ, "
            "or one side lacks one).") in report


def test_holm_runs_over_every_comparison_of_the_report(tmp_path):
    for num, (arm, right) in enumerate([("a", [0, 0, 0, 0, 0]), ("b", [1, 1, 1, 1, 1]), ("c", [1, 0, 0, 0, 0])]):
        _job(tmp_path, num, [f"arm={arm}", "seed=1"], right)
    report = write_report(tmp_path).read_text()
    # b: c = 5 -> p = 0.0625, Holm 2 × 0.0625; c: c = 1 -> p = 1, Holm 1
    # bootstrap: b - a is 1 on every item, so every resample: p = 2 / 2001, Holm 2 × that; c - a is 1 on one
    # item, 0 when a resample misses it ((4/5)^5 of them): a large p, its Holm p the larger of 2·p_b and p_c
    b, c = paired_difference([[1] * 5], [[0] * 5]), paired_difference([[1, 0, 0, 0, 0]], [[0] * 5])
    assert b.p == 2 / 2001 and c.p > 0.5
    holm_b, holm_c = 2 * b.p, max(2 * b.p, c.p)
    assert holm([b.p, c.p]) == [holm_b, holm_c]
    assert (f"| `arm=b` | 5 | 0.0% | 100.0% | +100.0 pp | 0 | 5 | 0.0625 | 0.1250 | +100.0 to +100.0 pp | "
            f"{_fmt(b.p)} | {_fmt(holm_b)} |") in report
    assert (f"| `arm=c` | 5 | 0.0% | 20.0% | +20.0 pp | 0 | 1 | 1.0000 | 1.0000 | {_pct(c)} | {_fmt(c.p)} | "
            f"{_fmt(holm_c)} |") in report
    assert "Correction: Holm over the k = 2 comparison(s) in this report, for each test separately." in report
