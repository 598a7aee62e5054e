"""Bootstrap intervals for a straight-line fit across study cells: how a score (or a paired
difference of scores) moves with a cell variable such as log2(number of training tasks) or
log2(instruction/output length ratio).

Each cell is a seeds × items array of per-item scores (row = training seed, column = test item), as
in ``instructune.bootstrap``. A resample redraws every cell on its own (seeds with replacement, then
items with replacement, the crossed design of ``bootstrap_means``), takes each cell's mean and refits
ordinary least squares; the coefficients' 95% percentile intervals and two-sided bootstrap p-values
(twice the smaller tail beyond zero, with ``Difference.p``'s (count + 1)/(B + 1) correction) come from
those refits. Drawing cells independently ignores a
positive correlation between cells that share test items, so the intervals of a within-item trend are
conservative (wider than a shared-item draw would give), never anticonservative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from instructune.bootstrap import DEFAULT_RESAMPLES, bootstrap_means


@dataclass(frozen=True)
class Coefficient:
    name: str
    estimate: float  # the fit to the cells' observed means
    low: float
    high: float
    p: float  # two-sided bootstrap p for "coefficient = 0"


def fit(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ordinary least squares coefficients of ``y`` on the columns of ``design``."""
    return np.linalg.lstsq(design, y, rcond=None)[0]


def regression(cells: Sequence[tuple[Sequence[float], np.ndarray]], names: Sequence[str], *,
               resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, random_seed: int = 0) -> list[Coefficient]:
    """Fit mean(cell) = b0 + b1·x1 + ... over cells given as (features x1..., seeds × items scores);
    ``names`` names b0, b1, ... Needs more cells than coefficients."""
    features = np.array([[1.0, *map(float, x)] for x, _ in cells])
    if len(names) != features.shape[1]:
        raise ValueError(f"{len(names)} names for {features.shape[1]} coefficients")
    if len(cells) <= features.shape[1]:
        raise ValueError(f"{len(cells)} cells cannot fit {features.shape[1]} coefficients with any residual")
    observed = fit(features, np.array([float(np.mean(scores)) for _, scores in cells]))
    means = np.stack([bootstrap_means(np.asarray(scores, dtype=float), resamples=resamples, random_seed=random_seed + i)
                      for i, (_, scores) in enumerate(cells)], axis=1)  # resamples × cells
    refits = np.linalg.lstsq(features, means.T, rcond=None)[0].T  # resamples × coefficients
    tail = (1 - confidence) / 2
    out = []
    for j, name in enumerate(names):
        draws = refits[:, j]
        below, above = int((draws <= 0).sum()), int((draws >= 0).sum())  # as Difference.p: (count + 1) / (B + 1)
        p = min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1))
        out.append(Coefficient(name, float(observed[j]), float(np.quantile(draws, tail)),
                               float(np.quantile(draws, 1 - tail)), p))
    return out
