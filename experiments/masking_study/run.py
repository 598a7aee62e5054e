"""Masking study: does loss on responses only (masking=true) beat loss over the whole sequence?

    python experiments/masking_study/run.py            # the 48-job sweep, then the report (~25 min, 2 cores)
    python experiments/masking_study/run.py --report-only

The sweep is ``python train.py -m experiment=masking_study`` (conf/experiment/masking_study.yaml:
full FT and LoRA x masking on/off x 150/450 steps x 300/all training records x seeds 0,1,2).
This script adds the study's own table (masked minus unmasked, per setting) and plot to the
generic sweep report, and copies report.md and the PNGs next to itself.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from instructune.sweep_plots import percent_errors, pyplot, score_axis
from instructune.sweep_report import Row, collect, format_stat, mean_ci, save_figure, write_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SWEEP = REPO / "multirun" / "masking_study"


def _setting(row: Row) -> dict[str, str]:
    return dict(part.split("=", 1) for part in row.label.split())


def study_table(rows: list[Row]) -> tuple[str, list[tuple[str, float, float, float, float]]]:
    """One line per (strategy, steps, records): EM masked, EM unmasked, difference (paired by seed)."""
    by_key: dict[tuple[str, str, str], dict[str, Row]] = {}
    for row in rows:
        s = _setting(row)
        key = (s.get("peft", "?"), s.get("trainer.max_steps", "?"), s.get("data.source.max_train_records", "?"))
        by_key.setdefault(key, {})[s.get("masking", "?").lower()] = row
    lines = ["| strategy | steps | train records | EM masked | EM unmasked | masked - unmasked (paired by seed) "
             "| val loss masked | val loss unmasked |", "|---|---|---|---|---|---|---|---|"]
    points = []
    for (peft, steps, records), pair in sorted(by_key.items(), key=lambda kv: (kv[0][0], int(kv[0][1]), kv[0][2])):
        masked, unmasked = pair.get("true"), pair.get("false")
        if masked is None or unmasked is None:
            continue
        diff = _paired_difference(masked, unmasked, "eval.tuned.all")
        records_label = "1,766 (all)" if records == "null" else records
        lines.append(f"| {peft} | {steps} | {records_label} | {format_stat(masked.stat('eval.tuned.all'), True)} | "
                     f"{format_stat(unmasked.stat('eval.tuned.all'), True)} | {format_stat(diff, True)} | "
                     f"{format_stat(masked.stat('metrics.val/loss'), False)} | "
                     f"{format_stat(unmasked.stat('metrics.val/loss'), False)} |")
        m, u = masked.stat("eval.tuned.all"), unmasked.stat("eval.tuned.all")
        if m and u:
            points.append((f"{peft}\n{steps} steps\n{records_label.split()[0]} rec.", m[0], m[1], u[0], u[1]))
    return "\n".join(lines) + "\n", points


def _paired_difference(a: Row, b: Row, path: str) -> tuple[float, float, int] | None:
    """Mean ± 95% CI of a - b over the seeds both rows ran (same seed = same data order and init)."""
    va = {j.seed: j.value(path) for j in a.jobs if j.status == "ok"}
    vb = {j.seed: j.value(path) for j in b.jobs if j.status == "ok"}
    diffs = [va[s] - vb[s] for s in va if s in vb and va[s] is not None and vb[s] is not None]
    return mean_ci(diffs) if diffs else None


def figure(points: list[tuple[str, float, float, float, float]]) -> Any:
    """Bars of exact match, masked beside unmasked, per setting; the score axis from 0 to at most 100%
    and the 95% CI bars cut at 0 and 100 (a t interval over 3 seeds can cross either)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = range(len(points))
    masked = percent_errors([p[1] for p in points], [p[2] for p in points])
    unmasked = percent_errors([p[3] for p in points], [p[4] for p in points])
    ax.bar([i - 0.2 for i in x], [100 * p[1] for p in points], 0.4, yerr=masked, capsize=3,
           label="masking=true (response-only loss)", color="#4c72b0")
    ax.bar([i + 0.2 for i in x], [100 * p[3] for p in points], 0.4, yerr=unmasked, capsize=3,
           label="masking=false (loss on prompt too)", color="#dd8452")
    ax.set_xticks(list(x), [p[0] for p in points], fontsize=7)
    tops = [100 * p[1] + u for p, u in zip(points, masked[1])] + [100 * p[3] + u for p, u in zip(points, unmasked[1])]
    score_axis(ax, max(tops, default=0.0))
    ax.set_ylabel("tuned exact match, test (%)")
    ax.set_title("Masking study on the embedded world (mean ± 95% CI over 3 seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(points: list[tuple[str, float, float, float, float]], out: Path) -> Path:
    return save_figure(figure(points), out / "masking_effect.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="re-read an existing sweep folder")
    args = parser.parse_args()
    if not args.report_only:
        if SWEEP.exists():
            shutil.rmtree(SWEEP)
        started = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "experiment=masking_study"], cwd=REPO, check=True)
        (SWEEP / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")
    report = write_report(SWEEP, HERE)
    rows = collect(SWEEP)
    table, points = study_table(rows)
    plot(points, HERE)
    wall = (SWEEP / "wall_seconds.txt").read_text().strip() if (SWEEP / "wall_seconds.txt").is_file() else "?"
    text = report.read_text()
    head, _, rest = text.partition("\n\n")
    report.write_text(f"{head}\n\nSweep wall time: {wall} s (two jobs at a time, one CPU thread each).\n\n"
                      f"## Masked minus unmasked\n\n{table}\n![masking effect](masking_effect.png)\n\n"
                      f"## Every configuration\n\n{rest}")
    print(report.read_text())


if __name__ == "__main__":
    main()
