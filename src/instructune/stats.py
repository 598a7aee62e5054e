"""The statistics of the sweep report, in pure Python (no scipy for three formulas): a confidence
interval for a proportion, an exact paired test for two models scored on the same items, and a
multiple-comparison correction for the several comparisons one report makes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / n``: the proportions ``p`` that a
    two-sided score test at this level would not reject. Unlike the normal ("Wald") interval
    ``p ± z·sqrt(p(1-p)/n)`` it never leaves [0, 1] and does not shrink to a point at 0 or n
    successes, which is where small test splits and weak models put exact-match scores. With no
    items (``n == 0``) nothing is known: (0, 1)."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..n, got {successes} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # the exact bounds at 0 and n successes are 0 and 1; rounding must not push them past
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar test for paired binary outcomes: ``b`` pairs where only the first
    model is right, ``c`` where only the second is. Pairs where both agree say nothing about which is
    better; under the null hypothesis (equal accuracy) each discordant pair is a fair coin, so the
    p-value is the two-sided binomial test of ``b`` successes in ``b + c`` trials at 1/2 (doubled
    smaller tail, capped at 1). Exact, not the chi-squared approximation, because sweeps of a few
    seeds on small test splits give few discordant pairs. No discordant pairs: p = 1."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))  # integers: exact for any n
    return min(1.0, tail / 2 ** (n - 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, in the order given: the i-th smallest of m p-values is multiplied
    by ``m - i`` (i from 0), made non-decreasing along the sorted order and capped at 1. It controls
    the family-wise error rate across a report's comparisons like Bonferroni does, under any
    dependence between them (arms share a baseline), and is never less powerful than Bonferroni."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
