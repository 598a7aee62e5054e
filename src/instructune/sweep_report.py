"""Turn a multirun folder into ``report.md`` and PNG plots: one row per configuration (the job's
overrides without ``seed``), metrics as mean ± 95% CI across seeds, failed jobs as failed rows; the
tuned exact match pooled over items with a Wilson interval, and each configuration against the first
by an exact McNemar test on items paired by seed, Holm-corrected across the report's comparisons."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.eval.metrics import exact_match
from instructune.run_folder import job_overrides, read_job_config, read_predictions, read_summary, sweep_jobs
from instructune.stats import exact_mcnemar, holm, wilson_interval
from instructune.sweep_plots import cost_figure, exact_match_figure, save_figure, val_loss_figure

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


def _cells(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _head(header: list[str]) -> list[str]:
    return [_cells(header), "|" + "|".join("---" for _ in header) + "|"]


def markdown_table(rows: list[Row]) -> str:
    header = ["configuration", "seeds", *[name for name, _ in METRICS], "trainable params", "wall s",
              "real tokens/s", "MFU", "status"]
    lines = _head(header)
    for row in rows:
        ok = [j for j in row.jobs if j.status == "ok"]
        failed = [j.status for j in row.jobs if j.status != "ok"]
        params = {int(j.summary["params"]["trainable"]) for j in ok if j.summary and "params" in j.summary}
        wall = [v for j in ok if (v := j.value("wall_seconds")) is not None]
        speed = [v for j in ok if (v := j.value("throughput.real_tokens_per_s")) is not None]
        mfu = [v for j in ok if (v := j.value("throughput.mfu")) is not None]
        cells = [f"`{row.label}`", str(len(row.jobs)),
                 *[format_stat(row.stat(path), percent=not path.startswith("metrics.")) for _, path in METRICS],
                 ", ".join(f"{p:,}" for p in sorted(params)) or "-",
                 f"{statistics.fmean(wall):.1f}" if wall else "-",
                 f"{statistics.fmean(speed):,.0f}" if speed else "-",
                 f"{100 * statistics.fmean(mfu):.1f}%" if mfu else "-",
                 "ok" if not failed else f"{len(failed)} failed: " + "; ".join(sorted(set(failed)))[:200]]
        lines.append(_cells(cells))
    return "\n".join(lines) + "\n"


def wilson_section(rows: list[Row]) -> list[str]:
    """Tuned exact match pooled over every test item of every seed of a configuration (correct items
    from each summary's ``eval.tuned.all`` × ``eval.tuned.n``) with its 95% Wilson interval."""
    lines = _head(["configuration", "seeds", "correct / n", "tuned EM", "95% Wilson interval"])
    for row in rows:
        counts = [(round(em * n), int(n)) for j in row.jobs if j.status == "ok"
                  and (em := j.value("eval.tuned.all")) is not None and (n := j.value("eval.tuned.n"))]
        right, n = sum(c for c, _ in counts), sum(n for _, n in counts)
        low, high = wilson_interval(right, n) if n else (math.nan, math.nan)
        lines.append(_cells([f"`{row.label}`", str(len(counts)), f"{right} / {n}" if n else "-",
                             f"{100 * right / n:.1f}%" if n else "-",
                             f"{100 * low:.1f}% – {100 * high:.1f}%" if n else "-"]))
    return ["## Tuned exact match pooled over items and seeds", "",
            "Correct test items over all items of all seeds of a configuration (n = items × seeds) with the "
            "95% Wilson score interval. It counts items as independent draws: item sampling noise, not the "
            "seed-to-seed spread of the ± column above.", "", *lines, ""]


@dataclass
class Pairing:
    """One configuration against the baseline on items paired by (seed, item index)."""

    label: str
    hits: list[tuple[bool, bool]] = field(default_factory=list)  # (baseline right, arm right) per pair
    skipped: int = 0  # same seed and index but a different item, or an item one side lacks
    seeds: list[str] = field(default_factory=list)

    def discordant(self) -> tuple[int, int]:
        """(b, c): pairs only the baseline got right, pairs only the arm got right."""
        return sum(x and not y for x, y in self.hits), sum(y and not x for x, y in self.hits)


def predictions_by_seed(row: Row) -> dict[str | None, list[dict[str, Any]]]:
    """seed -> the ``predictions.jsonl`` lines of the row's first successful job with that seed."""
    found: dict[str | None, list[dict[str, Any]]] = {}
    for job in row.jobs:
        if job.status == "ok" and job.seed not in found and (lines := read_predictions(job.folder)) is not None:
            found[job.seed] = lines
    return found


def pair(base_preds: dict[str | None, list[dict[str, Any]]], arm: Row) -> Pairing:
    """Items matched by seed and index (same instruction, input and reference), each side's tuned
    answer scored by the runs' own exact match."""
    result, arm_preds = Pairing(arm.label), predictions_by_seed(arm)
    for seed in [s for s in base_preds if s in arm_preds]:
        result.seeds.append(str(seed))
        left, right = base_preds[seed], arm_preds[seed]
        for i in range(max(len(left), len(right))):
            x, y = (left[i] if i < len(left) else {}), (right[i] if i < len(right) else {})
            same = x and y and all(x.get(k) == y.get(k) for k in ("instruction", "input", "reference"))
            if not same or None in (x.get("tuned"), y.get("tuned")):
                result.skipped += 1
            else:
                result.hits.append((exact_match(x["tuned"], x["reference"]), exact_match(y["tuned"], y["reference"])))
    return result


def paired_section(rows: list[Row]) -> list[str]:
    """Every configuration against the first: exact McNemar p, Holm-adjusted over the comparisons
    that have pairs."""
    if len(rows) < 2:
        return []
    baseline = predictions_by_seed(rows[0])  # read once for all comparisons
    pairings = [pair(baseline, row) for row in rows[1:]]
    tested = [p for p in pairings if p.hits]
    adjusted = dict(zip(map(id, tested), holm([exact_mcnemar(*p.discordant()) for p in tested]), strict=True))
    lines = _head(["configuration", "n pairs", "baseline EM", "arm EM", "difference", "b", "c", "p", "Holm p"])
    for p in pairings:
        n, (b, c) = len(p.hits), p.discordant()
        base, arm = (100 * sum(h[k] for h in p.hits) / n if n else math.nan for k in (0, 1))
        ps = [f"{q:.4f}" if q >= 1e-4 else "<0.0001" for q in (exact_mcnemar(b, c), adjusted[id(p)])] if n else []
        lines.append(_cells([f"`{p.label}`", str(n), *([f"{base:.1f}%", f"{arm:.1f}%", f"{arm - base:+.1f} pp",
                                                        str(b), str(c), *ps] if n else ["-"] * 7)]))
    notes = [f"`{p.label}`: {len(p.hits)} pairs over seeds {', '.join(p.seeds) or '(none in common)'}"
             + (f", {p.skipped} skipped (the items at the same seed and index differ, or one side lacks one)"
                if p.skipped else "") for p in pairings]
    return ["## Paired comparisons", "", f"Baseline: `{rows[0].label}` (the first configuration).", "", *lines, "",
            "Test: exact McNemar test (two-sided binomial test on the discordant pairs; b = baseline right and "
            "arm wrong, c = baseline wrong and arm right) on item-level pairs of tuned answers matched by seed and "
            "test item (same instruction, input and reference), scored by the runs' exact match; EM columns are "
            "over the paired items.", "",
            f"Correction: Holm over the k = {len(tested)} comparison(s) in this report.", "",
            "n: " + "; ".join(notes) + ".", ""]


def _plots(rows: list[Row], out: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """The PNGs written, and why configurations that trained have no validation loss to draw: reason ->
    their labels."""
    written = []
    stats = [(r.label, r.stat("eval.tuned.all")) for r in rows]
    scores = [(label, s[0], s[1]) for label, s in stats if s is not None]
    if scores:
        written.append(save_figure(exact_match_figure(scores), out / "exact_match.png"))
    cost = [(r.label, r.stat("eval.tuned.all"), r.stat("throughput.train_seconds")) for r in rows]
    points = [(label, seconds[0], em[0], em[1]) for label, em, seconds in cost
              if em is not None and seconds is not None]
    if points:
        written.append(save_figure(cost_figure(points), out / "cost.png"))
    curves = [(row, _mean_val_curve(row)) for row in rows]
    if any(curve for _, curve in curves):
        figure = val_loss_figure([(row.label, curve) for row, curve in curves if curve])
        written.append(save_figure(figure, out / "val_loss.png"))
    missing: dict[str, list[str]] = {}
    for row, curve in curves:
        if not curve and any(j.status == "ok" for j in row.jobs):
            missing.setdefault(_no_validation(row), []).append(row.label)
    return written, missing


def _no_validation(row: Row) -> str:
    """Why a configuration that trained has no point on the validation-loss plot."""
    ok = [j for j in row.jobs if j.status == "ok"]
    if not any(any(j.folder.glob("csv/version_*/metrics.csv")) for j in ok):
        return "no CSV log (run with `logger=csv`)"
    steps = sorted({int(v) for j in ok if (v := j.value("steps")) is not None})
    stopped = f"stopped at {' / '.join(map(str, steps))} steps" if steps else "stopped"
    intervals = sorted({str(v) for j in ok if (v := _trainer_setting(j.folder, "val_check_interval")) is not None})
    every = f"every {' / '.join(intervals)} steps" if intervals else "every `trainer.val_check_interval` steps"
    return (f"the runs {stopped}, before the first validation ({every}); set `trainer.val_check_interval` "
            "to at most `trainer.max_steps`")


def _trainer_setting(job_dir: Path, key: str) -> Any:
    """``trainer.<key>`` of the config Hydra composed for the job (``.hydra/config.yaml``), or None."""
    config = read_job_config(job_dir)
    trainer = config.get("trainer") if config else None
    return trainer.get(key) if isinstance(trainer, dict) else None


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
    plots, notes = _plots(rows, out)
    n_jobs = sum(len(r.jobs) for r in rows)
    text = [f"# Sweep report: {sweep_dir.name}", "",
            f"{n_jobs} job(s) in {len(rows)} configuration(s). Metrics are means over seeds ± the 95% "
            "confidence half-width (Student t); exact match on the test split, ROUGE-L F1 of the tuned model; "
            "validation loss on response tokens.", ""]
    common = common_overrides(sweep_dir)
    if common:
        text += ["Common to every job: " + " ".join(f"`{o}`" for o in common), ""]
    text += [markdown_table(rows), *wilson_section(rows), *paired_section(rows)]
    if notes:
        text += ["No validation-loss curve for:", "", *[f"- {', '.join(f'`{label}`' for label in labels)}: {reason}."
                                                       for reason, labels in notes.items()], ""]
    text += [f"![{p.stem}]({p.name})" for p in plots]
    report = out / "report.md"
    report.write_text("\n".join(text) + "\n")
    return report
