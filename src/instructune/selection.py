"""Choose on validation, report on test: the validation-split evaluation a run is selected by (sweeps,
the Optuna objective, the studies' learning-rate and lambda choices), its learning curve during training
(``eval.every_n_steps``) and, with ``checkpoint=best``, restoring the best checkpoint before the test
split is scored once."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from omegaconf import DictConfig

from instructune.config_check import ConfigError
from instructune.eval.validation_generation import MONITOR, BudgetEvaluation, ValidationGeneration

log = logging.getLogger(__name__)


def check_selection(cfg: DictConfig) -> None:
    """Combinations of eval.* and checkpoint.* that cannot work, before anything is loaded."""
    ev, checkpoint = cfg.eval, cfg.checkpoint
    every, split = ev.get("every_n_steps"), ev.get("selection_split")
    monitors = checkpoint.get("monitor") == MONITOR
    if every is not None and not split:
        raise ConfigError(f"eval.every_n_steps={every} needs eval.selection_split (e.g. validation)")
    if split and split == ev.split:
        log.warning("eval.selection_split=%s is also eval.split: choices (sweeps, Optuna, checkpoints) and reported "
                    "scores come from the same split; for claims, report on another (split=test)", split)
    if monitors and every is None:
        raise ConfigError("checkpoint=best monitors validation exact match, which eval.every_n_steps produces: "
                          "set eval.every_n_steps (e.g. the checkpoint's every_n_train_steps)")
    if ev.get("restore_best") and not monitors:
        raise ConfigError("eval.restore_best=true needs checkpoint=best (a checkpoint chosen by validation exact match)")
    budgets, max_steps = ev.get("budgets"), cfg.trainer.get("max_steps", -1)
    if budgets is not None:
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in budgets) or not budgets:
            raise ConfigError(f"eval.budgets={list(budgets)}: must be a list of steps >= 1 (e.g. [150,300,600])")
        if max_steps > 0 and max(budgets) > max_steps:
            raise ConfigError(f"eval.budgets={list(budgets)}: step {max(budgets)} is beyond trainer.max_steps={max_steps}")
        if cfg.get("ckpt_path"):
            raise ConfigError("eval.budgets with ckpt_path: the scores of budgets passed before the interruption are "
                              "not in the checkpoint; run the budgets in one uninterrupted run")
        if ev.get("restore_best"):
            raise ConfigError("eval.budgets with eval.restore_best=true: budgets score the model as it trains, "
                              "the final score a restored one; use one or the other")


def selection_callbacks(cfg: DictConfig, evaluation: Any, report: Any) -> list[L.Callback]:
    """Validation generation every ``eval.every_n_steps``, and the test + selection scores at ``eval.budgets``."""
    every, budgets = cfg.eval.get("every_n_steps"), cfg.eval.get("budgets")
    built: list[L.Callback] = []
    if every is not None and evaluation is not None:
        built.append(ValidationGeneration(evaluation, int(every)))
    if budgets:
        built.append(BudgetEvaluation(report, evaluation, list(budgets)))
    return built


def restore_best(trainer: L.Trainer, module: L.LightningModule, callbacks: list[Any]) -> dict[str, Any] | None:
    """Load the best checkpoint's trainable weights (``checkpoint=best``) into ``module``; returns where
    it came from and its score, for summary.json. The final step is scored too but only saved at a
    multiple of the interval: when it beats every checkpoint, the last model stays."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    chosen = next((c for c in trainer.checkpoint_callbacks
                   if isinstance(c, ModelCheckpoint) and c.monitor == MONITOR and c.best_model_path), None)
    if chosen is None:
        log.warning("eval.restore_best: no checkpoint was chosen by %s; testing the last model", MONITOR)
        return None
    last = curve(callbacks)[-1] if curve(callbacks) else None
    if last is not None and last["step"] == trainer.global_step and last["all"] > float(chosen.best_model_score):
        log.info("the last step (%s %.4f) beats every checkpoint: testing the last model", MONITOR, last["all"])
        return {"path": None, "step": last["step"], MONITOR: last["all"]}
    state = trainer.strategy.checkpoint_io.load_checkpoint(chosen.best_model_path)
    missing = module.load_state_dict(state["state_dict"], strict=False)
    if missing.unexpected_keys:
        raise RuntimeError(f"{chosen.best_model_path}: keys this model does not have: {missing.unexpected_keys[:3]}")
    log.info("restored the best checkpoint (%s %.4f, step %s) before the test split", MONITOR,
             float(chosen.best_model_score), state.get("global_step"))
    return {"path": chosen.best_model_path, "step": state.get("global_step"), MONITOR: float(chosen.best_model_score)}


def curve(callbacks: list[Any]) -> list[dict[str, Any]]:
    return next((c.curve for c in callbacks if isinstance(c, ValidationGeneration)), [])


def budget_scores(callbacks: list[Any]) -> dict[str, Any]:
    return next((c.scores for c in callbacks if isinstance(c, BudgetEvaluation)), {})


def generation_seconds(callbacks: list[Any]) -> float:
    """Seconds spent generating during fit: the throughput meter leaves them out of training time."""
    return sum(c.seconds for c in callbacks if isinstance(c, ValidationGeneration | BudgetEvaluation))


__all__ = ["check_selection", "selection_callbacks", "restore_best", "curve", "budget_scores", "generation_seconds"]
