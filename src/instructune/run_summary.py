"""The body of a run's summary.json that every training stage shares (``train`` and ``dpo_stage``):
data, lengths, parameters, throughput, the base / tuned / validation scores, budgets and samples."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from instructune.selection import budget_scores, curve

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from instructune.run_folder import RunFolder
    from instructune.train import Fitted, Parts


def tuned_scores(parts: Parts, model: Any, enabled: bool) -> tuple[Any, Any]:
    """The tuned model's scores on the evaluation split and on the selection split (the same run when the
    two splits are one), or (None, None) with ``eval.tuned=false``."""
    if not enabled:
        return None, None
    scores = parts.evaluation.run(model, "tuned")
    if not parts.selection:
        return scores, None
    return scores, scores if parts.selection is parts.evaluation else parts.selection.run(model, "tuned", keep=False)


def summary_body(cfg: DictConfig, parts: Parts, fitted: Fitted, folder: RunFolder, params: tuple[int, int],
                 scores: tuple[Any, Any, Any]) -> dict[str, Any]:
    """What every stage's summary.json reports of a fit: data, lengths, parameters, throughput, the base /
    tuned / validation scores (``scores``) and the budgets (``dpo_stage`` adds its own block)."""
    (trainable, total), (base_scores, tuned, chosen_on) = params, scores
    return {
        "data": {split: len(examples) for split, examples in parts.data.examples.items()},
        # the realised training mix per task or source, and the train/eval overlap audit (data/mixture.py, overlap.py)
        "mixture": parts.data.mixture_report() if hasattr(parts.data, "mixture_report") else None,
        "overlap": getattr(parts.data, "overlap_report", None),
        "lengths": {"max_seq_length": parts.data.max_seq_length, "overlength": parts.data.overlength,
                    **parts.data.length_report},
        "params": {"trainable": trainable, "total": total, "trainable_fraction": trainable / total},
        "lr": parts.optimizer.effective_lr, "steps": fitted.trainer.global_step,
        "fit_seconds": round(fitted.seconds, 2), "throughput": fitted.throughput, "kernels": parts.kernels,
        "metrics": fitted.metrics, "eval": {"base": base_scores, "tuned": tuned},
        "selection": {"split": cfg.eval.get("selection_split"), "tuned": chosen_on, "curve": curve(fitted.callbacks),
                      "restored": fitted.restored},
        "budgets": budget_scores(fitted.callbacks),
        "samples": parts.evaluation.samples(cfg.eval.samples),
        "model_dir": str(folder.model_dir) if cfg.export else None,
    }
