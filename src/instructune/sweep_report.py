"""Turn a multirun folder into ``report.md`` and PNG plots: one row per configuration (the job's
overrides without ``seed``), metrics as mean ± 95% CI across seeds, failed jobs as failed rows."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.run_folder import job_overrides, read_summary, sweep_jobs

# Two-sided 95% Student-t quantiles for 1..30 degrees of freedom (scipy is not a dependency for one
# table); beyond 30 the normal 1.96 is within 2%.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

METRICS: tuple[tuple[str, str], ...] = (
    ("tuned EM", "eval.tuned.all"), ("tuned EM seen", "eval.tuned.seen"), ("tuned EM held-out", "eval.tuned.held_out"),
    ("base EM", "eval.base.all"), ("ROUGE-L", "eval.tuned.rougeL/all"), ("val loss", "metrics.val/loss"),
)


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
    """(mean, 95% confidence half-width by Student t, n); the half-width is nan for one value."""
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


def format_stat(stat: tuple[float, float, int] | None, percent: bool) -> str:
    """``mean ± half-width`` (percent for scores, 3 decimals for losses); ``-`` when nothing ran."""
    if stat is None:
        return "-"
    mean, half, _ = stat
    scale, unit = (100, "%") if percent else (1, "")
    text = f"{scale * mean:.1f}{unit}" if percent else f"{mean:.3f}"
    if not math.isnan(half):
        text += f" ± {scale * half:.1f}" if percent else f" ± {half:.3f}"
    return text


def markdown_table(rows: list[Row]) -> str:
    header = ["configuration", "seeds", *[name for name, _ in METRICS], "trainable params", "wall s",
              "real tokens/s", "MFU", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        ok = [j for j in row.jobs if j.status == "ok"]
        failed = [j.status for j in row.jobs if j.status != "ok"]
        params = {int(j.summary["params"]["trainable"]) for j in ok if j.summary and "params" in j.summary}
        wall = [j.summary["wall_seconds"] for j in ok if j.summary]
        speed = [v for j in ok if (v := j.value("throughput.real_tokens_per_s")) is not None]
        mfu = [v for j in ok if (v := j.value("throughput.mfu")) is not None]
        cells = [f"`{row.label}`", str(len(row.jobs)),
                 *[format_stat(row.stat(path), percent=not path.startswith("metrics.")) for _, path in METRICS],
                 ", ".join(f"{p:,}" for p in sorted(params)) or "-",
                 f"{statistics.fmean(wall):.1f}" if wall else "-",
                 f"{statistics.fmean(speed):,.0f}" if speed else "-",
                 f"{100 * statistics.fmean(mfu):.1f}%" if mfu else "-",
                 "ok" if not failed else f"{len(failed)} failed: " + "; ".join(sorted(set(failed)))[:200]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _plots(rows: list[Row], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    stats = [(r.label, r.stat("eval.tuned.all")) for r in rows]
    stats = [(label, s) for label, s in stats if s is not None]
    if stats:
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(stats)), 3.5))
        means = [100 * s[0] for _, s in stats]
        errors = [0 if math.isnan(s[1]) else 100 * s[1] for _, s in stats]
        ax.bar(range(len(stats)), means, yerr=errors, capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(stats)), [label.replace(" ", "\n") for label, _ in stats], fontsize=7)
        ax.set_ylabel("tuned exact match (%)")
        ax.set_title("exact match by configuration (mean ± 95% CI)")
        written.append(save_figure(fig, out / "exact_match.png"))
    cost = [(r.label, r.stat("eval.tuned.all"), r.stat("throughput.train_seconds")) for r in rows]
    cost = [(label, em, seconds) for label, em, seconds in cost if em is not None and seconds is not None]
    if cost:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, em, seconds in cost:
            ax.errorbar(seconds[0], 100 * em[0], yerr=0 if math.isnan(em[1]) else 100 * em[1], fmt="o", capsize=3)
            ax.annotate(label, (seconds[0], 100 * em[0]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("training seconds (mean over seeds)")
        ax.set_ylabel("tuned exact match (%)")
        ax.set_title("quality against cost")
        written.append(save_figure(fig, out / "cost.png"))
    curves = [(row.label, _mean_val_curve(row)) for row in rows]
    curves = [(label, curve) for label, curve in curves if curve]
    if curves:
        fig, ax = plt.subplots(figsize=(9, 3.8))
        for label, curve in curves:  # one line per configuration: the mean over its seeds at each step
            ax.plot(list(curve), list(curve.values()), marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (response tokens)")
        ax.set_title("validation loss, mean over seeds")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        written.append(save_figure(fig, out / "val_loss.png"))
    return written


def save_figure(fig: Any, path: Path) -> Path:
    """PNG at 120 dpi, cropped to its content (legends placed outside the axes included), then closed
    so a long sweep report does not accumulate open figures."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _mean_val_curve(row: Row) -> dict[int, float]:
    """step -> validation loss averaged over the row's jobs that logged that step (CSV logger)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for job in row.jobs:
        for path in sorted(job.folder.glob("csv/version_*/metrics.csv")):
            for rec in csv.DictReader(path.open()):
                if rec.get("val/loss"):
                    by_step[int(rec["step"])].append(float(rec["val/loss"]))
    return {step: statistics.fmean(v) for step, v in sorted(by_step.items())}


def write_report(sweep_dir: Path, out: Path | None = None) -> Path:
    out = out or sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no job folders (with .hydra/) found; is this a multirun folder?")
    plots = _plots(rows, out)
    n_jobs = sum(len(r.jobs) for r in rows)
    text = [f"# Sweep report: {sweep_dir.name}", "",
            f"{n_jobs} job(s) in {len(rows)} configuration(s). Metrics are means over seeds ± the 95% "
            "confidence half-width (Student t); exact match on the test split, ROUGE-L F1 of the tuned model; "
            "validation loss on response tokens.", ""]
    common = common_overrides(sweep_dir)
    if common:
        text += ["Common to every job: " + " ".join(f"`{o}`" for o in common), ""]
    text += [markdown_table(rows)]
    text += [f"![{p.stem}]({p.name})" for p in plots]
    report = out / "report.md"
    report.write_text("\n".join(text) + "\n")
    return report
