"""PEFT study: full fine-tuning, LoRA, prefix, prompt tuning, IA3 and BitFit, each at its own tuned
learning rate, on both embedded model families; quality against trainable parameters and time.

    python experiments/peft_study/run.py                # the four sweeps, then the report (~27 min, 2 cores)
    python experiments/peft_study/run.py --report-only
    python experiments/peft_study/run.py --experiments peft_study_t5_high_lr   # re-run one sweep

Sweeps: ``python train.py -m experiment=peft_study_gpt2`` (6 strategies x lr_scale 0.33/1/3 x seeds
0,1,2) and ``experiment=peft_study_t5`` (the same without BitFit: T5 has no bias terms), then
``peft_study_gpt2_high_lr`` / ``peft_study_t5_high_lr``: lr_scale 9 for the strategies whose best
rate in the first sweep was its top (prefix, prompt, IA3, BitFit), so every choice is bracketed. Each
strategy's learning rate is the one with the lowest *validation* loss averaged over the three seeds;
the test-split scores at that learning rate are what the main table reports (choosing by test
exact match would flatter every method).
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from instructune.run_folder import job_overrides
from instructune.sweep_plots import percent_errors, place_labels, pyplot, score_axis
from instructune.sweep_report import Row, collect, format_stat, save_figure

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# family -> its sweeps: every strategy at lr_scale 0.33 / 1 / 3, then lr_scale 9 for the strategies
# that sweep found best at 3 (the grid's edge), so each chosen rate has a worse one on both sides
SWEEPS = {"GPT-2 (causal)": ["peft_study_gpt2", "peft_study_gpt2_high_lr"],
          "T5 (seq2seq)": ["peft_study_t5", "peft_study_t5_high_lr"]}
SCALES = ["0.33", "1", "3", "9"]


def sweep_dir(experiment: str) -> Path:
    return REPO / "multirun" / "peft_study" / experiment.removeprefix("peft_study_")
ORDER = ["full", "lora", "prefix", "prompt", "ia3", "bitfit"]


def _setting(row: Row) -> dict[str, str]:
    return dict(part.split("=", 1) for part in row.label.split())


def family_rows(experiments: list[str]) -> list[Row]:
    """One row per (strategy, lr_scale) over a family's sweep folders, labelled from each job's own
    overrides (``collect`` drops overrides shared by a whole folder, such as lr_scale=9)."""
    rows: dict[str, Row] = {}
    for experiment in experiments:
        if not sweep_dir(experiment).is_dir():
            continue
        for row in collect(sweep_dir(experiment)):
            for job in row.jobs:
                overrides = dict(o.split("=", 1) for o in job_overrides(job.folder) if "=" in o)
                label = f"peft={overrides.get('peft', '?')} optimizer.lr_scale={overrides.get('optimizer.lr_scale', '1')}"
                rows.setdefault(label, Row(label)).jobs.append(job)
    return list(rows.values())


def _mean(row: Row, path: str) -> float:
    stat = row.stat(path)
    return stat[0] if stat else math.inf


def _mean_or_none(row: Row, path: str) -> float | None:
    stat = row.stat(path)
    return stat[0] if stat else None


def choose(rows: list[Row]) -> dict[str, tuple[Row, list[Row]]]:
    """strategy -> (row at the learning rate with the lowest mean validation loss, all its rows)."""
    by_peft: dict[str, list[Row]] = {}
    for row in rows:
        by_peft.setdefault(_setting(row).get("peft", "?"), []).append(row)
    return {peft: (min(candidates, key=lambda r: _mean(r, "metrics.val/loss")), candidates)
            for peft, candidates in by_peft.items()}


def tables(family: str, chosen: dict[str, tuple[Row, list[Row]]]) -> tuple[str, str, list[dict]]:
    main = [f"### {family}", "",
            "| strategy | lr (scale) | trainable params | EM all | EM seen | EM held-out | ROUGE-L | chrF | val loss "
            "| train s | real tokens/s | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    sweep = [f"### {family}: learning-rate sweep (mean over seeds)", "",
             "| strategy | " + " | ".join(f"lr_scale {x}" for x in SCALES) + " |", "|---|" + "---|" * len(SCALES)]
    points = []
    for peft in [p for p in ORDER if p in chosen]:
        best, candidates = chosen[peft]
        lr = _mean_or_none(best, "lr")
        trainable = _mean_or_none(best, "params.trainable")
        fraction = _mean_or_none(best, "params.trainable_fraction")
        failed = sum(j.status != "ok" for r in candidates for j in r.jobs)
        seconds = _mean_or_none(best, "throughput.train_seconds")
        tokens_per_s = _mean_or_none(best, "throughput.real_tokens_per_s")
        main.append(f"| {peft} | {lr:.3g} ({_setting(best).get('optimizer.lr_scale', '1')}) | "
                    f"{trainable:,.0f} ({100 * fraction:.2f}%) | {format_stat(best.stat('eval.tuned.all'), True)} | "
                    f"{format_stat(best.stat('eval.tuned.seen'), True)} | "
                    f"{format_stat(best.stat('eval.tuned.held_out'), True)} | "
                    f"{format_stat(best.stat('eval.tuned.rougeL/all'), True)} | "
                    f"{format_stat(best.stat('eval.tuned.chrf/all'), True)} | "
                    f"{format_stat(best.stat('metrics.val/loss'), False)} | {seconds or 0:.1f} | "
                    f"{tokens_per_s or 0:,.0f} | {'ok' if not failed else f'{failed} job(s) failed'} |")
        cells = {}
        for row in candidates:
            em, loss = row.stat("eval.tuned.all"), row.stat("metrics.val/loss")
            mark = " **(chosen)**" if row is best else ""
            cells[_setting(row).get("optimizer.lr_scale")] = (
                f"val {loss[0]:.3f} / EM {100 * em[0]:.1f}%{mark}" if em and loss else "failed")
        sweep.append(f"| {peft} | " + " | ".join(cells.get(x, "-") for x in SCALES) + " |")
        em = best.stat("eval.tuned.all")
        if em and trainable:
            points.append({"family": family, "peft": peft, "trainable": trainable, "em": em[0],
                           "ci": 0 if math.isnan(em[1]) else em[1], "seconds": seconds or 0})
    return "\n".join(main) + "\n", "\n".join(sweep) + "\n", points


def figure(points: list[dict]) -> Any:
    """Exact match against trainable parameters (log) and against training seconds, both families;
    each point named by its strategy where the name overlaps no other name or marker, the score
    axes from 0 to at most 100% and the 95% CI bars cut at 0 and 100."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    errors = percent_errors([p["em"] for p in points], [p["ci"] for p in points])
    for ax, key, label in ((axes[0], "trainable", "trainable parameters (log)"),
                           (axes[1], "seconds", "training seconds (mean of 3 seeds)")):
        for family, marker in (("GPT-2 (causal)", "o"), ("T5 (seq2seq)", "s")):
            mine = [i for i, p in enumerate(points) if p["family"] == family]
            ax.errorbar([points[i][key] for i in mine], [100 * points[i]["em"] for i in mine],
                        yerr=[[errors[0][i] for i in mine], [errors[1][i] for i in mine]], fmt=marker, capsize=3,
                        clip_on=False, label=family)  # a point at 0% drawn whole
        ax.set_xlabel(label)
    axes[0].set_xscale("log")
    score_axis(axes[0], max((100 * p["em"] + u for p, u in zip(points, errors[1])), default=0.0))
    axes[0].set_ylabel("tuned exact match, test (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("PEFT study on the embedded world: quality vs trainable parameters and time (mean ± 95% CI)")
    fig.tight_layout()
    for ax, key in ((axes[0], "trainable"), (axes[1], "seconds")):  # once the layout is final
        place_labels(ax, [(p[key], 100 * p["em"]) for p in points], [p["peft"] for p in points])
    return fig


def plot(points: list[dict], out: Path) -> Path:
    return save_figure(figure(points), out / "quality_vs_cost.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="re-read existing sweep folders")
    parser.add_argument("--experiments", nargs="+", default=None, help="run only these sweeps, then report")
    args = parser.parse_args()
    walls = {}
    for family, experiments in SWEEPS.items():
        for experiment in experiments:
            folder = sweep_dir(experiment)
            if not args.report_only and (args.experiments is None or experiment in args.experiments):
                if folder.exists():
                    shutil.rmtree(folder)
                started = time.perf_counter()
                subprocess.run([sys.executable, str(REPO / "train.py"), "-m", f"experiment={experiment}"], cwd=REPO,
                               check=True)
                (folder / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")
            wall_file = folder / "wall_seconds.txt"
            walls[experiment] = int(wall_file.read_text()) if wall_file.is_file() else 0
    main_tables, sweep_tables, points = [], [], []
    for family, experiments in SWEEPS.items():
        main_table, sweep_table, family_points = tables(family, choose(family_rows(experiments)))
        main_tables.append(main_table)
        sweep_tables.append(sweep_table)
        points += family_points
    plot(points, HERE)
    all_jobs = [j for experiments in SWEEPS.values() for r in family_rows(experiments) for j in r.jobs]
    n_jobs = len(all_jobs)
    steps = sorted({j.summary.get("steps") for j in all_jobs if j.summary and j.status == "ok"})
    text = ["# PEFT study: report", "",
            f"{n_jobs} jobs; sweep wall time {sum(walls.values())} s ("
            + ", ".join(f"{experiment} {wall} s" for experiment, wall in walls.items())
            + f"), two jobs at a time, one CPU thread each. {'/'.join(map(str, steps))} steps of batch 16, "
            "masking on, the embedded world.",
            "Scores: mean ± 95% CI (Student t) over seeds 0, 1, 2 at each strategy's chosen learning rate "
            "(lowest mean validation loss over lr_scale 0.33 / 1 / 3 around its default, and 9 where 3 was best). "
            "EM = exact match on "
            "the test split (169 examples: 109 of seen task families, 60 of held-out ones).", "",
            "## Quality against cost", "", *main_tables, "![quality vs cost](quality_vs_cost.png)", "",
            "## Learning-rate sweeps", "", *sweep_tables]
    (HERE / "report.md").write_text("\n".join(text) + "\n")
    print((HERE / "report.md").read_text())


if __name__ == "__main__":
    main()
