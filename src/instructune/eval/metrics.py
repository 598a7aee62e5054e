"""Scores for generated answers, grouped by task and by seen vs held-out task families."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def normalize(text: str) -> str:
    """Exact match compares text with runs of whitespace collapsed and ends stripped. Case and
    punctuation are kept: they are the answer for tasks such as upper-casing or passive voice (a
    case-folded match let a lower-case answer pass the world's uppercase task)."""
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


def grouped_exact_match(
    predictions: Sequence[str], references: Sequence[str], tasks: Sequence[str | None], seen_tasks: set[str]
) -> dict[str, object]:
    """Exact match overall, for seen tasks, for held-out tasks (tasks never in the train split) and
    per task. Groups without examples are omitted, not reported as 0."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for pred, ref, task in zip(predictions, references, tasks, strict=True):
        hit = exact_match(pred, ref)
        hits["all"].append(hit)
        if task:
            hits["seen" if task in seen_tasks else "held_out"].append(hit)
            hits[f"task/{task}"].append(hit)
    scores: dict[str, object] = {k: sum(v) / len(v) for k, v in hits.items()}
    scores["n"] = len(hits["all"])
    return scores


def generation_scores(
    predictions: Sequence[str], references: Sequence[str], tasks: Sequence[str | None], seen_tasks: set[str]
) -> dict[str, object]:
    """Exact match (keys as ``grouped_exact_match``) plus, per group (all / seen / held_out),
    ROUGE-L F1 (mean over examples) and corpus-level chrF, both from torchmetrics. chrF uses
    character n-grams up to 6 without an effective-order correction, so single short words that
    match exactly score below 1; compare it between runs, not to 1."""
    from torchmetrics.functional.text import chrf_score
    from torchmetrics.functional.text.rouge import rouge_score

    scores = grouped_exact_match(predictions, references, tasks, seen_tasks)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        groups["all"].append(i)
        if task:
            groups["seen" if task in seen_tasks else "held_out"].append(i)
    for group, idx in groups.items():
        preds = [normalize(predictions[i]) for i in idx]
        refs = [normalize(references[i]) for i in idx]
        rouge = rouge_score(preds, refs, rouge_keys="rougeL", accumulate="avg")
        scores[f"rougeL/{group}"] = float(rouge["rougeL_fmeasure"])
        scores[f"chrf/{group}"] = float(chrf_score(preds, [[r] for r in refs]))
    return scores
