"""The seeds × items bootstrap against what can be worked out without it: a constant score, the exact
distribution of a 2 × 2 resample (crossed and nested), the binomial standard error of one seed, and
(where scipy is installed) scipy's one-level bootstrap."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from instructune.bootstrap import DEFAULT_RESAMPLES, arm_interval, bootstrap_means, paired_difference


@pytest.mark.parametrize("same_items", [True, False])
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_a_constant_0_1_score_has_a_zero_width_interval_at_that_value(value, same_items):
    found = arm_interval(np.full((3, 7), value), same_items=same_items)
    assert (found.mean, found.low, found.high) == (value, value, value)
    assert (found.seeds, found.items, found.same_items, found.resamples, found.confidence) == (
        3, 21, same_items, DEFAULT_RESAMPLES, 0.95)


def test_a_constant_continuous_score_has_a_zero_width_interval_at_that_value():
    for same_items in (True, False):
        found = arm_interval(np.full((2, 5), 0.7), same_items=same_items)
        assert (found.mean, found.low, found.high) == pytest.approx((0.7, 0.7, 0.7), abs=1e-12)


def _frequencies(means: np.ndarray, values: list[float]) -> list[float]:
    assert np.isin(np.round(means, 12), values).all()  # no value outside the exact support
    return [float(np.mean(np.isclose(means, v))) for v in values]


def test_two_seeds_two_items_crossed_follow_the_exact_distribution():
    """X = [[1, 0], [0, 0]], items shared by the seeds: mean = w1·v1/4 with w1, v1 (how often seed 1 and
    item 1 are drawn) independent Binomial(2, 1/2): 1 w.p. 1/16, 1/2 w.p. 2·(1/4·1/2) = 1/4,
    1/4 w.p. 1/2·1/2 = 1/4, 0 w.p. 7/16."""
    means = bootstrap_means(np.array([[1.0, 0.0], [0.0, 0.0]]), resamples=40_000)
    assert _frequencies(means, [0.0, 0.25, 0.5, 1.0]) == pytest.approx([7 / 16, 4 / 16, 4 / 16, 1 / 16], abs=0.01)


def test_two_seeds_two_items_nested_follow_the_exact_distribution():
    """Same scores, each drawn seed's items drawn on its own: k ~ Binomial(2, 1/2) draws of seed 1, each
    a mean in {0, 1/2, 1} w.p. (1/4, 1/2, 1/4), seed 2 always 0. P(1) = 1/4·1/16, P(3/4) = 1/4·4/16,
    P(1/2) = 1/2·1/4 + 1/4·6/16, P(1/4) = 1/2·1/2 + 1/4·4/16, P(0) = the rest = 25/64."""
    means = bootstrap_means([[1.0, 0.0], [0.0, 0.0]], same_items=False, resamples=40_000)
    assert _frequencies(means, [0.0, 0.25, 0.5, 0.75, 1.0]) == pytest.approx(
        [25 / 64, 20 / 64, 14 / 64, 4 / 64, 1 / 64], abs=0.01)


@pytest.mark.parametrize("same_items", [True, False])
def test_one_seed_gives_the_binomial_standard_error(same_items):
    """One seed of n = 400 items, p = 1/2: the item bootstrap's SD is sqrt(p(1 - p)/n) = 0.025 and its
    95% percentile interval about 2 · 1.96 · 0.025 = 0.098 wide."""
    scores = np.tile([1.0, 0.0], 200)[None, :]
    means = bootstrap_means(scores, same_items=same_items, resamples=10_000)
    assert means.std() == pytest.approx(0.025, rel=0.05)
    found = arm_interval(scores, same_items=same_items, resamples=10_000)
    assert found.mean == 0.5
    assert found.high - found.low == pytest.approx(2 * 1.96 * 0.025, rel=0.10)
    assert found.low < 0.5 < found.high


def test_seed_variation_widens_the_interval():
    """Two seeds far apart (all right, all wrong) on the same items: the seed draw alone moves the mean
    between 0 and 1, so the interval spans far more than either seed's (zero-width) item interval."""
    found = arm_interval(np.array([np.ones(50), np.zeros(50)]))
    assert (found.mean, found.low, found.high) == (0.5, 0.0, 1.0)


def test_the_same_seed_gives_the_same_numbers_and_another_seed_others():
    scores = (np.random.default_rng(3).random((4, 60)) < 0.4).astype(float)
    for same_items in (True, False):
        first = bootstrap_means(scores, same_items=same_items, random_seed=7)
        assert np.array_equal(first, bootstrap_means(scores, same_items=same_items, random_seed=7))
        assert not np.array_equal(first, bootstrap_means(scores, same_items=same_items, random_seed=8))
        assert arm_interval(scores, same_items=same_items) == arm_interval(scores, same_items=same_items)
    a, b = scores, np.roll(scores, 1, axis=1)
    assert paired_difference(a, b, random_seed=5) == paired_difference(a, b, random_seed=5)


def test_intervals_never_leave_0_1():
    rng = np.random.default_rng(0)
    for shape, p in [((1, 3), 0.05), ((2, 5), 0.95), ((5, 40), 0.02), ((3, 30), 0.5)]:
        binary = (rng.random(shape) < p).astype(float)
        continuous = rng.random(shape) ** 3  # a ROUGE-like score in [0, 1]
        for scores in (binary, continuous):
            for same_items in (True, False):
                found = arm_interval(scores, same_items=same_items, resamples=500)
                assert 0.0 <= found.low <= found.high <= 1.0
                assert found.mean == pytest.approx(scores.mean())


def test_nested_seeds_of_different_sizes_pool_their_items():
    found = arm_interval([[1, 1, 1], [0]], same_items=False)
    assert (found.mean, found.seeds, found.items, found.same_items) == (0.75, 2, 4, False)
    assert 0.0 <= found.low < found.high <= 1.0


def test_identical_arms_differ_by_nothing_with_p_1():
    scores = (np.random.default_rng(1).random((3, 40)) < 0.5).astype(float)
    for same_items in (True, False):
        found = paired_difference(scores, scores.copy(), same_items=same_items)
        assert (found.mean, found.low, found.high, found.p) == (0.0, 0.0, 0.0, 1.0)
        assert found.low <= 0.0 <= found.high


def test_a_strongly_better_arm_has_a_small_p():
    rng = np.random.default_rng(2)
    base = (rng.random((3, 50)) < 0.2).astype(float)
    better = np.maximum(base, rng.random((3, 50)) < 0.6)  # right wherever the baseline is, and more
    found = paired_difference(better, base)
    assert found.mean == pytest.approx((better - base).mean())
    assert 0.0 < found.low <= found.mean <= found.high
    # every resampled difference is positive: p is the floor 2 / (B + 1)
    assert found.p == 2 / (DEFAULT_RESAMPLES + 1) < 0.01
    assert paired_difference(base, better).p == found.p and paired_difference(base, better).high < 0


def test_the_p_value_is_twice_the_smaller_tail_of_the_resampled_differences():
    rng = np.random.default_rng(4)
    a, b = (rng.random((2, 30)) < 0.5).astype(float), (rng.random((2, 30)) < 0.45).astype(float)
    means = bootstrap_means(a - b, resamples=999, random_seed=3)
    tail = min((means <= 0).sum(), (means >= 0).sum())
    found = paired_difference(a, b, resamples=999, random_seed=3)
    assert found.p == min(1.0, 2 * (tail + 1) / 1000)
    assert (found.low, found.high) == tuple(np.quantile(means, [0.025, 0.975]))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="same_items=False"):
        arm_interval([[1, 0, 1], [1, 0]])
    with pytest.raises(ValueError, match="nan"):
        arm_interval(np.array([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="at least one seed"):
        arm_interval(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="pair cell by cell"):
        paired_difference([[1, 0]], [[1, 0, 1]], same_items=False)
    with pytest.raises(ValueError, match="confidence"):
        arm_interval([[1, 0]], confidence=95)


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy not installed")
def test_one_seed_matches_scipys_percentile_bootstrap():
    from scipy.stats import bootstrap

    scores = (np.random.default_rng(5).random(300) < 0.3).astype(float)
    ours = arm_interval(scores[None, :], resamples=20_000)
    theirs = bootstrap((scores,), np.mean, n_resamples=20_000, method="percentile", random_state=0).confidence_interval
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=0.01)
