"""Generation scores on the validation split while training: learning curves, and the metric a
checkpoint is chosen by (``checkpoint=best``). Selection reads validation; the test split is scored
once, on the final (or restored best) model, so no choice is made on the numbers that are reported."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

from instructune.eval.split_evaluation import SplitEvaluation

log = logging.getLogger(__name__)

MONITOR = "val_gen/exact_match"  # what conf/checkpoint/best.yaml monitors
CURVE_KEYS = ("all", "seen", "held_out", "paraphrase", "rougeL/all", "chrf/all")


def curve_point(step: int, scores: dict[str, Any]) -> dict[str, Any]:
    """One point of the learning curve summary.json keeps: the step and the group scores (no per-task keys)."""
    return {"step": step, "n": scores["n"], **{k: scores[k] for k in CURVE_KEYS if k in scores}}


class ValidationGeneration(L.Callback):
    """Every ``every_n_steps`` optimiser steps, and after the last one, generate answers for the
    validation split (``evaluation``) and log exact match, ROUGE-L and chrF as ``val_gen/*`` (exact match
    per seen / held-out group and per task too). Runs in every process, so under DDP each rank logs the
    same value and a checkpoint callback monitoring it agrees across ranks."""

    def __init__(self, evaluation: SplitEvaluation, every_n_steps: int) -> None:
        if every_n_steps < 1:
            raise ValueError(f"eval.every_n_steps must be >= 1 (or null: off), got {every_n_steps}")
        self.evaluation, self.every_n_steps = evaluation, every_n_steps
        self.curve: list[dict[str, Any]] = []
        self.seconds = 0.0  # spent generating: not training time (the throughput meter subtracts it)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        at_end = trainer.max_steps > 0 and step >= trainer.max_steps
        if step > 0 and (step % self.every_n_steps == 0 or at_end) and (not self.curve or self.curve[-1]["step"] != step):
            self._score(pl_module, step)

    def _score(self, pl_module: L.LightningModule, step: int) -> None:
        started = time.perf_counter()
        scores = self.evaluation.run(pl_module.model, f"step {step}", keep=False)
        self.seconds += time.perf_counter() - started
        if scores is None:
            return
        self.curve.append(curve_point(step, scores))
        metrics = {MONITOR: scores["all"], "val_gen/rougeL": scores["rougeL/all"], "val_gen/chrf": scores["chrf/all"]}
        metrics.update({f"val_gen/exact_match/{k}": v for k, v in scores.items()
                        if k in ("seen", "held_out", "paraphrase") or k.startswith("task/")})
        for name, value in metrics.items():
            pl_module.log(name, float(value), on_step=True, on_epoch=False, batch_size=1)


class BudgetEvaluation(L.Callback):
    """Scores at training budgets: at each step of ``steps`` (e.g. 150, 300, 600 of a constant-rate run),
    the report split (``report``, the test split: one score per budget arm, its answers kept as
    ``tuned@<step>`` for predictions.jsonl and the paired statistics) and the selection split (what a
    study chooses its learning rate on). Process 0 only: nothing is logged or monitored."""

    def __init__(self, report: SplitEvaluation, selection: SplitEvaluation | None, steps: list[int]) -> None:
        if not steps or any(int(s) < 1 for s in steps):
            raise ValueError(f"eval.budgets must be steps >= 1, got {steps}")
        self.report, self.selection, self.steps = report, selection, sorted({int(s) for s in steps})
        self.scores: dict[str, dict[str, Any]] = {}
        self.seconds = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if trainer.global_rank != 0 or step not in self.steps or str(step) in self.scores:
            return
        started = time.perf_counter()
        self.scores[str(step)] = {
            "test": self.report.run(pl_module.model, f"tuned@{step}"),
            "selection": self.selection.run(pl_module.model, f"step {step}", keep=False) if self.selection else None}
        self.seconds += time.perf_counter() - started


__all__ = ["MONITOR", "ValidationGeneration", "BudgetEvaluation", "curve_point"]
