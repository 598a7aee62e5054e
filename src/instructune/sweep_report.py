"""Turn a multirun folder into ``report.md`` and PNG plots: one row per configuration (the job's
overrides without ``seed``), scores as means over seeds × test items with a 95% bootstrap interval
(``instructune.bootstrap``), the validation loss as mean ± 95% Student t over seeds, failed jobs as
failed rows; the tuned exact match pooled over items with a Wilson interval, and each configuration
against the first by an exact McNemar test and a paired bootstrap, Holm-corrected across the report's
comparisons (``sweep_sections``); a column per judge that scored the jobs' tuned answers
(``instructune judge``), with the same bootstrap over seeds and items."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from instructune.run_folder import read_job_config
from instructune.sweep_data import mixture_section, overlap_section, preference_section
from instructune.sweep_items import JudgeScore, Predictions, RowScore, judge_scores, row_score
from instructune.sweep_plots import cost_figure, exact_match_figure, save_figure, val_loss_figure
from instructune.sweep_rows import Job, Row, collect, common_overrides, mean_ci, predictions_by_seed
from instructune.sweep_sections import (cells, head, interval_notes, judge_cell, judge_header, judge_notes,
                                        paired_section, score_cell, wilson_section)

__all__ = ["METRICS", "Job", "Row", "collect", "common_overrides", "format_stat", "markdown_table", "mean_ci",
           "save_figure", "write_report"]  # Row, collect, mean_ci: where the studies import them from

# The first column is what to choose a configuration by (validation); the others are what to report (test).
METRICS: tuple[tuple[str, str], ...] = (
    ("validation EM (choose)", "selection.tuned.all"), ("tuned EM", "eval.tuned.all"), ("tuned EM seen", "eval.tuned.seen"), ("tuned EM held-out", "eval.tuned.held_out"),
    ("base EM", "eval.base.all"), ("ROUGE-L", "eval.tuned.rougeL/all"), ("val loss", "metrics.val/loss"),
)


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


Scores = dict[str, list[RowScore | None]]  # summary path -> each row's score


def row_scores(rows: list[Row], predictions: list[Predictions]) -> Scores:
    """Every score column of every row, computed once (each interval is a bootstrap)."""
    return {path: [row_score(row, preds, path) for row, preds in zip(rows, predictions, strict=True)]
            for _, path in METRICS if not path.startswith("metrics.")}


def markdown_table(rows: list[Row], scores: Scores, judges: dict[str, list[JudgeScore | None]] | None = None) -> str:
    """The main table: scores with their intervals (``score_cell``), the loss as mean ± t half-width,
    and a column per judge when jobs were judged (``instructune judge``)."""
    judges = judges or {}
    header = ["configuration", "seeds", *[name for name, _ in METRICS], *judge_header(list(judges)),
              "trainable params", "wall s", "real tokens/s", "MFU", "status"]
    lines = head(header)
    for i, row in enumerate(rows):
        ok = [j for j in row.jobs if j.status == "ok"]
        failed = [j.status for j in row.jobs if j.status != "ok"]
        params = {int(j.summary["params"]["trainable"]) for j in ok if j.summary and "params" in j.summary}
        wall = [v for j in ok if (v := j.value("wall_seconds")) is not None]
        speed = [v for j in ok if (v := j.value("throughput.real_tokens_per_s")) is not None]
        mfu = [v for j in ok if (v := j.value("throughput.mfu")) is not None]
        lines.append(cells([f"`{row.label}`", str(len(row.jobs)),
                            *[score_cell(scores[path][i]) if path in scores else format_stat(row.stat(path), False)
                              for _, path in METRICS],
                            *[judge_cell(column[i]) for column in judges.values()],
                            ", ".join(f"{p:,}" for p in sorted(params)) or "-",
                            f"{statistics.fmean(wall):.1f}" if wall else "-",
                            f"{statistics.fmean(speed):,.0f}" if speed else "-",
                            f"{100 * statistics.fmean(mfu):.1f}%" if mfu else "-",
                            "ok" if not failed else f"{len(failed)} failed: " + "; ".join(sorted(set(failed)))[:200]]))
    return "\n".join(lines) + "\n"


def _plots(rows: list[Row], tuned: list[RowScore | None], out: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """The PNGs written (``tuned``: each row's tuned exact match), and why configurations that trained
    have no validation loss to draw: reason -> their labels."""
    written = []
    scores = [(row.label, s.mean, s.low, s.high) for row, s in zip(rows, tuned, strict=True) if s is not None]
    if scores:
        written.append(save_figure(exact_match_figure(scores), out / "exact_match.png"))
    cost = [(row.label, s, row.stat("throughput.train_seconds")) for row, s in zip(rows, tuned, strict=True)]
    points = [(label, seconds[0], em.mean, em.low, em.high) for label, em, seconds in cost
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
    predictions = [predictions_by_seed(row) for row in rows]  # read once for every section
    scores = row_scores(rows, predictions)
    judges = judge_scores(rows)
    plots, notes = _plots(rows, scores["eval.tuned.all"], out)
    n_jobs = sum(len(r.jobs) for r in rows)
    text = [f"# Sweep report: {sweep_dir.name}", "",
            f"{n_jobs} job(s) in {len(rows)} configuration(s): exact match on the test split, ROUGE-L F1 of the "
            "tuned model, validation loss on response tokens.", ""]
    common = common_overrides(sweep_dir)
    if common:
        text += ["Common to every job: " + " ".join(f"`{o}`" for o in common), ""]
    text += [markdown_table(rows, scores, judges), *interval_notes([r.label for r in rows], scores["eval.tuned.all"]),
             *judge_notes(rows, judges),
             *wilson_section(rows), *paired_section(rows, predictions), *preference_section(rows, predictions),
             *mixture_section(rows), *overlap_section(rows)]
    if notes:
        text += ["No validation-loss curve for:", "", *[f"- {', '.join(f'`{label}`' for label in labels)}: {reason}."
                                                       for reason, labels in notes.items()], ""]
    text += [f"![{p.stem}]({p.name})" for p in plots]
    report = out / "report.md"
    report.write_text("\n".join(text) + "\n")
    return report
