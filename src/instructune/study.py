"""A comparative study with every arm at its own best: tune each arm's learning rate on the validation
split from a grid that brackets the optimum, then train each arm at its tuned rate with fresh seeds and
score the test split at several training budgets (``eval.budgets`` of one constant-rate run per seed).

Every run is a real ``train.py -m`` sweep job (Hydra's joblib launcher runs ``n_jobs`` at a time), so
a study's run folders are ordinary run folders; ``study.json`` records the design, the tuning grid
with its validation scores, the chosen rates and the final runs. The report (``study_report``) reads it.

Why an own loop rather than Hydra's Optuna sweeper (``hparams_search``): a bracketing check needs a
grid that grows past whichever edge the best value sits on, and the studies compare arms at a fixed,
reviewable grid; Optuna's samplers choose their own points.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instructune.run_folder import read_summary, sweep_jobs

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"


@dataclass(frozen=True)
class Arm:
    """One compared configuration: its name in tables, its overrides, its starting learning-rate grid."""

    name: str
    overrides: tuple[str, ...]
    lr_grid: tuple[float, ...]


@dataclass(frozen=True)
class StudyDesign:
    """``base``: overrides every run shares; ``budgets``: the steps the test split is scored at (the last
    is the tuning budget); ``seeds``: the final runs' seeds (the tuning seed is not among them)."""

    name: str
    base: tuple[str, ...]
    arms: tuple[Arm, ...]
    budgets: tuple[int, ...]
    seeds: tuple[int, ...]
    tuning_seed: int = 1000
    grid_factor: float = 3.0
    max_extensions: int = 2
    n_jobs: int = 2
    launcher: tuple[str, ...] = ("hydra/launcher=joblib",)  # e.g. ("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    baseline: str | None = None  # the arm the others are compared with (default: the first)
    notes: dict[str, Any] = field(default_factory=dict)
    tune_lr: bool = True  # False: every arm trains at the first rate of its grid (the report says so)


def validation_key(summary: dict[str, Any]) -> tuple[float, float, float]:
    """What the tuning maximises, read from summary.json: validation exact match, then validation
    ROUGE-L, then minus the validation loss (exact match ties often on a small split)."""
    chosen_on = (summary.get("selection") or {}).get("tuned") or {}
    loss = (summary.get("metrics") or {}).get("val/loss")
    return (chosen_on.get("all", float("-inf")), chosen_on.get("rougeL/all", float("-inf")),
            -loss if loss is not None else float("-inf"))


def bracketed(scores: dict[float, tuple[float, ...]]) -> tuple[float, str | None]:
    """The best learning rate and, when it sits at an edge of the grid, which edge (``low`` / ``high``)."""
    grid = sorted(scores)
    best = max(grid, key=lambda lr: (scores[lr], -abs(grid.index(lr) - (len(grid) - 1) / 2)))
    edge = "low" if best == grid[0] else "high" if best == grid[-1] else None
    return best, edge


def _sweep(design: StudyDesign, folder: Path, overrides: list[str], extra: list[str]) -> list[Path]:
    """One ``train.py -m`` sweep into ``folder``; returns its job folders (failed jobs included)."""
    # the experiment's own example grid (hydra.sweeper.params) is dropped: the study sets every swept key
    cmd = [sys.executable, "-m", "instructune.cli", "train", "-m", *design.base, "hydra.sweeper.params=null",
           *overrides, *extra,
           f"hydra.sweep.dir={folder}", *design.launcher,
           *([f"hydra.launcher.n_jobs={design.n_jobs}"] if "hydra/launcher=joblib" in design.launcher else [])]
    log.info("study %s: %s", design.name, " ".join(cmd[4:]))
    proc = subprocess.run(cmd, check=False)
    jobs = sweep_jobs(folder) if folder.is_dir() else []
    if proc.returncode != 0 and not jobs:
        raise RuntimeError(f"study {design.name}: the sweep into {folder} failed before any job ran")
    return jobs


def _lr_list(lrs: list[float]) -> str:
    return ",".join(f"{lr:.6g}" for lr in lrs)


def tune(design: StudyDesign, arm: Arm, folder: Path) -> dict[str, Any]:
    """The arm's learning rate: its grid at the last budget with the tuning seed, extended by
    ``grid_factor`` past an edge the best value sits on (at most ``max_extensions`` times). With
    ``design.tune_lr`` off, the first rate of the grid, untuned (a grid study too large to tune per cell)."""
    if not design.tune_lr:
        return {"lr": arm.lr_grid[0], "edge": None, "grid": [arm.lr_grid[0]], "runs": [], "fixed": True}
    scores: dict[float, tuple[float, ...]] = {}
    runs: list[dict[str, Any]] = []
    todo = sorted(arm.lr_grid)
    for round_ in range(design.max_extensions + 1):
        jobs = _sweep(design, folder / f"round{round_}", list(arm.overrides),
                      [f"optimizer.lr={_lr_list(todo)}", f"seed={design.tuning_seed}",
                       f"trainer.max_steps={max(design.budgets)}", "eval.budgets=null"])
        for job in jobs:
            summary = read_summary(job) or {}
            if summary.get("status") != "ok":
                continue
            lr = float(summary["lr"])
            scores[lr] = validation_key(summary)
            runs.append({"lr": lr, "run": str(job), "validation": summary["selection"]["tuned"]})
        if not scores:
            raise RuntimeError(f"study {design.name}: every tuning run of arm {arm.name} failed (see {folder})")
        if all(v[0] == float("-inf") and v[1] == float("-inf") for v in scores.values()):
            raise RuntimeError(f"study {design.name}: arm {arm.name}'s tuning runs have no validation scores (a data "
                               "set without a validation split, or eval.selection_split=null): nothing to choose on")
        best, edge = bracketed(scores)
        if edge is None or round_ == design.max_extensions:
            break
        todo = [best / design.grid_factor] if edge == "low" else [best * design.grid_factor]
    return {"lr": best, "edge": edge, "grid": sorted(scores), "runs": sorted(runs, key=lambda r: r["lr"])}


def final_runs(design: StudyDesign, arm: Arm, lr: float, folder: Path) -> list[str]:
    """The arm at its tuned rate, one run per seed, the test split scored at every budget."""
    budgets = "[" + ",".join(str(b) for b in sorted(design.budgets)) + "]"
    jobs = _sweep(design, folder, list(arm.overrides),
                  [f"optimizer.lr={lr:.6g}", "seed=" + ",".join(str(s) for s in design.seeds),
                   f"trainer.max_steps={max(design.budgets)}", f"eval.budgets={budgets}"])
    return [str(job) for job in jobs]


def run_study(design: StudyDesign, out: Path) -> dict[str, Any]:
    """Tune every arm, then run every arm's seeds; writes and returns ``<out>/study.json``."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    record: dict[str, Any] = {"design": asdict(design), "tuning": {}, "final": {}}
    for arm in design.arms:
        record["tuning"][arm.name] = tune(design, arm, out / "tune" / _folder_name(arm.name))
        (out / STUDY_FILE).write_text(json.dumps(record, indent=1) + "\n")
    for arm in design.arms:
        lr = record["tuning"][arm.name]["lr"]
        record["final"][arm.name] = final_runs(design, arm, lr, out / "final" / _folder_name(arm.name))
        (out / STUDY_FILE).write_text(json.dumps(record, indent=1) + "\n")
    record["wall_seconds"] = round(time.perf_counter() - started)
    (out / STUDY_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def _folder_name(name: str) -> str:
    """An arm's folder: letters, digits, ``.``, ``_`` and ``-`` only (a Hydra override value must not hold ``=``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("λ", "lambda")).strip("-") or "arm"


def add_study_arguments(parser: Any, arms_example: str) -> None:
    """The command line every study script shares: --quick, --report-only, --arms, --out."""
    from pathlib import Path as _Path

    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the machinery, not the question")
    parser.add_argument("--report-only", action="store_true", help="re-read the existing study folder(s)")
    parser.add_argument("--arms", nargs="+", default=None, help=f"only these arms, e.g. {arms_example}")
    parser.add_argument("--out", type=_Path, default=None, help="folder for the study's runs (default under multirun/); "
                        "with it, the report goes there too, not beside the script")


def parse_study_arguments(parser: Any, argv: list[str] | None) -> Any:
    """Parsed arguments; a part of a study (--arms) must not overwrite the full study's folder and report."""
    args = parser.parse_args(argv)
    if args.arms and not args.report_only and not args.out:
        parser.error("--arms runs part of the study: give it its own --out folder (the full study's folder and "
                     "committed report stay as they are)")
    return args


def study_main(argv: list[str] | None, doc: str, designs: tuple[StudyDesign, StudyDesign], repo: Path,
               script_dir: Path, report: Any, title: str, arms_example: str) -> Path:
    """What a study script's ``main`` does: parse the shared command line, run (or re-read) the full or
    the ``--quick`` design (``designs``), write its report with ``report(study, folder, title)`` beside
    the script (full study) or into the study folder (``--quick`` / ``--out``), print it, return its path."""
    import argparse
    from dataclasses import replace

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_study_arguments(parser, arms_example)
    parser.add_argument("--report-dir", type=Path, default=None, help="where report.md goes (default: beside the "
                        "script for the full study, the study folder for --quick or --out)")
    args = parse_study_arguments(parser, argv)
    design = designs[1] if args.quick else designs[0]
    if args.arms:
        design = replace(design, arms=tuple(a for a in design.arms if a.name in args.arms))
    out = args.out or repo / "multirun" / design.name
    study = run_or_read(design, out, args.report_only)
    path = report(study, args.report_dir or (out if args.quick or args.out else script_dir), title)
    print(path.read_text())
    return path


def run_or_read(design: StudyDesign, out: Path, report_only: bool = False) -> dict[str, Any]:
    """``report_only``: the study already in ``out``; otherwise a fresh run (an earlier one is removed)."""
    import shutil

    if report_only:
        return read_study(out)
    if out.exists():
        shutil.rmtree(out)
    return run_study(design, out)


def read_study(out: Path) -> dict[str, Any]:
    path = out / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no study here (run the study first, without --report-only)")
    return json.loads(path.read_text())


__all__ = ["Arm", "StudyDesign", "add_study_arguments", "parse_study_arguments", "study_main", "run_study", "run_or_read", "read_study", "tune", "final_runs", "bracketed", "validation_key"]
