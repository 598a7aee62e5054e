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


def item_group(task: str | None, group: str | None, seen_tasks: set[str]) -> str | None:
    """An item's evaluation group: its own ``group`` when the record names one (the world's
    ``paraphrase`` items: seen tasks asked in words never trained on), else ``seen`` for a task of the
    train split and ``held_out`` for any other task; None for an item without a task."""
    if group:
        return group
    if not task:
        return None
    return "seen" if task in seen_tasks else "held_out"


def grouped_exact_match(
    predictions: Sequence[str], references: Sequence[str], tasks: Sequence[str | None], seen_tasks: set[str],
    groups: Sequence[str | None] | None = None,
) -> dict[str, object]:
    """Exact match overall, for seen tasks, for held-out tasks (tasks never in the train split), for
    each named group (``groups``, e.g. ``paraphrase``) and per task (a grouped item counts for its task
    under ``task/<task>@<group>``). Groups without examples are omitted, not reported as 0."""
    hits: dict[str, list[bool]] = defaultdict(list)
    groups = groups if groups is not None else [None] * len(tasks)
    for pred, ref, task, group in zip(predictions, references, tasks, groups, strict=True):
        hit = exact_match(pred, ref)
        hits["all"].append(hit)
        where = item_group(task, group, seen_tasks)
        if where:
            hits[where].append(hit)
        if task:
            hits[f"task/{task}" + (f"@{group}" if group else "")].append(hit)
    scores: dict[str, object] = {k: sum(v) / len(v) for k, v in hits.items()}
    scores["n"] = len(hits["all"])
    return scores


def generation_scores(
    predictions: Sequence[str], references: Sequence[str], tasks: Sequence[str | None], seen_tasks: set[str],
    groups: Sequence[str | None] | None = None,
) -> dict[str, object]:
    """Exact match (keys as ``grouped_exact_match``) plus, per group (all / seen / held_out),
    ROUGE-L F1 (mean over examples) and corpus-level chrF, both from torchmetrics. chrF uses
    character n-grams up to 6 without an effective-order correction, so single short words that
    match exactly score below 1; compare it between runs, not to 1."""
    from torchmetrics.functional.text import chrf_score
    from torchmetrics.functional.text.rouge import rouge_score

    scores = grouped_exact_match(predictions, references, tasks, seen_tasks, groups)
    members: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        members["all"].append(i)
        where = item_group(task, groups[i] if groups is not None else None, seen_tasks)
        if where:
            members[where].append(i)
    for group, idx in members.items():
        preds = [normalize(predictions[i]) for i in idx]
        refs = [normalize(references[i]) for i in idx]
        rouge = rouge_score(preds, refs, rouge_keys="rougeL", accumulate="avg")
        scores[f"rougeL/{group}"] = float(rouge["rougeL_fmeasure"])
        scores[f"chrf/{group}"] = float(chrf_score(preds, [[r] for r in refs]))
    return scores
