"""The jobs of a multirun grouped into configurations (one row per set of overrides less ``seed``),
with each job's summary and, for the item-level statistics, its predictions: what the sweep report
and the studies read."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.run_folder import job_overrides, read_predictions, read_summary, sweep_jobs

# Two-sided 95% Student-t quantiles for 1..30 degrees of freedom (scipy is not a dependency for one
# table); beyond 30 the normal 1.96 is within 2%.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


@dataclass
class Job:
    folder: Path
    label: str
    seed: str | None
    summary: dict[str, Any] | None

    @property
    def status(self) -> str:
        if self.summary is None:
            return "no summary (killed before it finished?)"
        return "ok" if self.summary.get("status") == "ok" else f"failed: {self.summary.get('error', '?')}"

    def value(self, path: str) -> float | None:
        """A number in summary.json by dotted path (``eval.tuned.all``, ``metrics.val/loss``, ``lr``)."""
        node: Any = self.summary or {}
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return float(node) if isinstance(node, int | float) else None


def mean_ci(values: list[float]) -> tuple[float, float, int]:
    """(mean, 95% confidence half-width by Student t, n); the half-width is nan for one value. For
    unbounded numbers such as a loss: a score in [0, 1] gets ``instructune.bootstrap`` intervals."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, len(values)
    return mean, _T95[min(len(values) - 1, 30) - 1] * statistics.stdev(values) / math.sqrt(len(values)), len(values)


@dataclass
class Row:
    label: str
    jobs: list[Job] = field(default_factory=list)

    def stat(self, path: str) -> tuple[float, float, int] | None:
        values = [v for j in self.jobs if j.status == "ok" and (v := j.value(path)) is not None]
        return mean_ci(values) if values else None


def common_overrides(sweep_dir: Path) -> list[str]:
    """Overrides every job shares (the sweep's fixed settings): said once, above the table."""
    sets = [job_overrides(d) for d in sweep_jobs(sweep_dir)]
    return [o for o in sets[0] if all(o in s for s in sets[1:])] if len(sets) > 1 else []


def collect(sweep_dir: Path) -> list[Row]:
    """One row per configuration (the overrides that vary, less ``seed``), in job order."""
    rows: dict[str, Row] = {}
    common = set(common_overrides(sweep_dir))
    for job_dir in sweep_jobs(sweep_dir):
        overrides = job_overrides(job_dir)
        seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), None)
        label = " ".join(o for o in overrides if o not in common and not o.startswith("seed=")) or "(all jobs alike)"
        rows.setdefault(label, Row(label)).jobs.append(Job(job_dir, label, seed, read_summary(job_dir)))
    return list(rows.values())


def predictions_by_seed(row: Row) -> dict[str | None, list[dict[str, Any]]]:
    """seed -> the ``predictions.jsonl`` lines of the row's first successful job with that seed."""
    found: dict[str | None, list[dict[str, Any]]] = {}
    for job in row.jobs:
        if job.status == "ok" and job.seed not in found and (lines := read_predictions(job.folder)) is not None:
            found[job.seed] = lines
    return found
