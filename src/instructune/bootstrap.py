"""Bootstrap intervals for scores of test items under several training seeds: one arm's mean score,
and the paired difference of two arms. The public API the sweep report and the studies share:

    arm_interval(scores)          mean score of one arm, 95% percentile interval
    paired_difference(a, b)       mean of a - b paired by seed and item, 95% interval and two-sided p
    bootstrap_means(scores)       the B resampled means themselves, for other statistics

``scores`` is a seeds × items array of per-item scores (0/1 exact match, or a continuous score such
as ROUGE-L F1): row = training seed, column = test item. Why a two-level bootstrap: a score's
uncertainty has two sources, the seed (initialisation and data order: another seed, another model)
and the test items (another draw of test items, another score). A Student t over seed means sees
only the first and, with 2-5 seeds of a bounded score, gives intervals below 0 or above 100%; a
Wilson interval over pooled items sees only the second. Each resample therefore draws the seeds with
replacement, then the items with replacement:

- ``same_items=True`` (the default; a 2-D array): column j is the same test item for every seed
  (the world's test split does not depend on the seed). Items are drawn once per resample and shared
  by the drawn seeds, which keeps an item's difficulty common to every seed: Owen's (2007, Ann. Appl.
  Stat. 1:2) "pigeonhole" bootstrap of a crossed design. It is slightly conservative (the seed × item
  noise, a term of order 1/(seeds·items), is counted more than once).
- ``same_items=False`` (rows of any length): each seed has its own test items (a split seeded by the
  training seed, as ``data=json`` does). After drawing the seeds, each drawn seed's items are drawn on
  their own: the hierarchical bootstrap of a nested design.

The statistic is the mean over every resampled (seed, item) cell; with equal items per seed that is
the mean of the seed means. Intervals are percentile intervals, so an interval of 0/1 scores (or any
scores within [0, 1]) never leaves [0, 1]. One seed: the interval covers item sampling only.

B = 2000 resamples by default: the Monte Carlo error of a 2.5% / 97.5% percentile is then about 6% of
the score's standard error (sqrt(0.025·0.975/B)/φ(1.96)), small next to the interval's width of
about 4 standard errors, and a report of a hundred intervals still takes well under a second. Every
call draws from its own ``numpy.random.Generator(random_seed)``: the same inputs give the same numbers.
numpy, not scipy: scipy.stats.bootstrap resamples one level only, and scipy is no dependency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
_CELLS_PER_CHUNK = 1 << 20  # resamples are drawn in chunks of at most this many numbers: bounded memory

Scores = np.ndarray | Sequence[Sequence[float]]


@dataclass(frozen=True)
class Interval:
    """A mean score with its bootstrap percentile interval, and what it was computed from."""

    mean: float
    low: float
    high: float
    seeds: int
    items: int  # scored (seed, item) cells in all
    same_items: bool  # True: the same items for every seed (crossed); False: each seed its own (nested)
    resamples: int
    confidence: float


@dataclass(frozen=True)
class Difference(Interval):
    """The mean paired difference a - b with its interval and a two-sided bootstrap p-value: the
    smallest 1 - confidence at which the percentile interval would exclude 0, ``2·min(P*(Δ ≤ 0),
    P*(Δ ≥ 0))`` with the (count + 1)/(B + 1) correction, so never below 2/(B + 1) and 1 when every
    resampled difference is 0."""

    p: float


def _groups(scores: Scores, same_items: bool) -> list[np.ndarray]:
    """The scores as one float array per seed, checked: no seed without items, no nan, and (same
    items) as many items for every seed."""
    rows = [np.asarray(row, dtype=np.float64).ravel() for row in scores]
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("scores need at least one seed with at least one item")
    if any(np.isnan(row).any() for row in rows):
        raise ValueError("scores contain nan: drop the items a seed has no score for (same_items=False)")
    if same_items and len({len(row) for row in rows}) > 1:
        raise ValueError(f"same_items=True needs as many items for every seed, got {[len(r) for r in rows]}; "
                         "pass same_items=False when each seed has its own test items")
    return rows


def _crossed(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of resampled seeds × resampled items (one item draw shared by the drawn seeds): the seed
    draw as counts w (how often each seed was drawn), the items as indices into wᵀX."""
    seeds, items = x.shape
    out = np.empty(resamples)
    chunk = max(1, _CELLS_PER_CHUNK // items)
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        w = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=b)
        drawn = rng.integers(0, items, size=(b, items))
        out[start:start + b] = np.take_along_axis(w @ x, drawn, axis=1).sum(axis=1) / (seeds * items)
    return out


def _resampled_sums(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sums of ``k`` resamples (with replacement) of one seed's items."""
    out = np.empty(k)
    chunk = max(1, _CELLS_PER_CHUNK // len(x))
    for start in range(0, k, chunk):
        b = min(chunk, k - start)
        out[start:start + b] = x[rng.integers(0, len(x), size=(b, len(x)))].sum(axis=1)
    return out


def _nested(groups: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Pooled means of resampled seeds, each drawn seed's items resampled on their own."""
    draw = rng.integers(0, len(groups), size=(resamples, len(groups)))
    sums, cells = np.zeros(resamples), np.zeros(resamples)
    for s, x in enumerate(groups):
        picked = draw == s
        slot = np.zeros(draw.shape)
        slot[picked] = _resampled_sums(x, int(picked.sum()), rng)
        sums += slot.sum(axis=1)
        cells += picked.sum(axis=1) * len(x)
    return sums / cells


def bootstrap_means(scores: Scores, *, same_items: bool = True, resamples: int = DEFAULT_RESAMPLES,
                    random_seed: int = 0) -> np.ndarray:
    """``resamples`` means of ``scores`` (seeds × items) resampled by seed, then by item (module doc)."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    groups = _groups(scores, same_items)
    rng = np.random.default_rng(random_seed)
    return _crossed(np.stack(groups), resamples, rng) if same_items else _nested(groups, resamples, rng)


def _pooled_mean(groups: list[np.ndarray]) -> float:
    return float(sum(g.sum() for g in groups) / sum(len(g) for g in groups))


def _percentiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def arm_interval(scores: Scores, *, same_items: bool = True, confidence: float = 0.95,
                 resamples: int = DEFAULT_RESAMPLES, random_seed: int = 0) -> Interval:
    """One arm's mean score over seeds × items with its bootstrap percentile interval."""
    groups = _groups(scores, same_items)
    means = bootstrap_means(groups, same_items=same_items, resamples=resamples, random_seed=random_seed)
    return Interval(_pooled_mean(groups), *_percentiles(means, confidence), len(groups), sum(map(len, groups)),
                    same_items, resamples, confidence)


def paired_difference(a: Scores, b: Scores, *, same_items: bool = True, confidence: float = 0.95,
                      resamples: int = DEFAULT_RESAMPLES, random_seed: int = 0) -> Difference:
    """The mean of ``a - b`` where cell (s, i) of both is the same seed and the same test item: the
    pairs are resampled together (seeds, then items), which removes what the arms share (a hard item,
    a lucky data order) from the difference's uncertainty."""
    left, right = _groups(a, same_items), _groups(b, same_items)
    if [len(x) for x in left] != [len(y) for y in right]:
        raise ValueError(f"a and b must pair cell by cell: items per seed {[len(x) for x in left]} against "
                         f"{[len(y) for y in right]}")
    diffs = [x - y for x, y in zip(left, right, strict=True)]
    means = bootstrap_means(diffs, same_items=same_items, resamples=resamples, random_seed=random_seed)
    below, above = int((means <= 0).sum()), int((means >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (resamples + 1))
    return Difference(_pooled_mean(diffs), *_percentiles(means, confidence), len(diffs), sum(map(len, diffs)),
                      same_items, resamples, confidence, p)
