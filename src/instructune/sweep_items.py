"""Item-level scores of a sweep's configurations, from each job's ``predictions.jsonl``: per seed,
one score per test item (exact match, or ROUGE-L F1 by torchmetrics as the run scored it), which is
what the bootstrap intervals and the paired comparisons of the sweep report resample."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructune.bootstrap import Difference, Interval, arm_interval, paired_difference
from instructune.eval.judge_files import finished_results
from instructune.eval.metrics import exact_match, normalize
from instructune.sweep_rows import Row

Predictions = dict[str | None, list[dict[str, Any]]]  # seed -> predictions.jsonl lines
ItemKey = tuple[Any, Any, Any]  # (instruction, input, reference): the same test item

# summary.json path -> (answer in predictions.jsonl, items scored, score): the scores with item data
ITEM_METRICS: dict[str, tuple[str, str, str]] = {
    "eval.tuned.all": ("tuned", "all", "exact match"), "eval.tuned.seen": ("tuned", "seen", "exact match"),
    "eval.tuned.held_out": ("tuned", "held_out", "exact match"), "eval.base.all": ("base", "all", "exact match"),
    "eval.tuned.rougeL/all": ("tuned", "all", "ROUGE-L"),
}


def item_key(line: dict[str, Any]) -> ItemKey:
    return line.get("instruction"), line.get("input"), line.get("reference")


def _in_group(line: dict[str, Any], group: str) -> bool | None:
    """Whether an item counts for ``all`` / ``seen`` / ``held_out`` (an item without a task is in
    neither, as in ``grouped_exact_match``); None when the line cannot say (predictions.jsonl without
    a ``seen`` flag: the seen tasks are those of the train split, which the report does not load)."""
    if group == "all":
        return True
    if not line.get("task"):
        return False
    if line.get("group"):  # an item of a named group (the world's paraphrases) is in neither seen nor held_out
        return line["group"] == group
    seen = line.get("seen")
    return None if not isinstance(seen, bool) else seen == (group == "seen")


def _rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one answer, as ``generation_scores`` computes it over a split (whose mean over
    items it is): torchmetrics on whitespace-normalised text. About 40 µs an item."""
    from torchmetrics.functional.text.rouge import rouge_score

    return float(rouge_score(normalize(prediction), normalize(reference), rouge_keys="rougeL")["rougeL_fmeasure"])


def score(line: dict[str, Any], who: str, kind: str) -> float:
    answer, reference = line[who], line["reference"]
    return float(exact_match(answer, reference)) if kind == "exact match" else _rouge_l(answer, reference)


@dataclass
class SeedScores:
    """Per seed (in job order): the scored items and their scores."""

    seeds: list[str | None]
    keys: list[list[ItemKey]]
    scores: list[np.ndarray]

    @property
    def same_items(self) -> bool:
        """True when every seed scored the same items in the same order (a test split that does not
        depend on the seed): the bootstrap then draws items once for all seeds."""
        return all(k == self.keys[0] for k in self.keys[1:])


def seed_scores(predictions: Predictions, path: str) -> SeedScores | None:
    """The item scores behind ``path`` (a key of ITEM_METRICS) for each seed, or None when some seed's
    lines cannot give them (no such answer, no ``seen`` flag, no item in the group)."""
    if path not in ITEM_METRICS or not predictions:
        return None
    who, group, kind = ITEM_METRICS[path]
    result = SeedScores([], [], [])
    for seed, lines in predictions.items():
        member = [_in_group(line, group) for line in lines]
        picked = [line for line, m in zip(lines, member, strict=True) if m]
        if None in member or not picked or any(not isinstance(line.get(who), str) for line in picked):
            return None
        result.seeds.append(seed)
        result.keys.append([item_key(line) for line in picked])
        result.scores.append(np.array([score(line, who, kind) for line in picked]))
    return result


def row_interval(row: Row, predictions: Predictions, path: str) -> Interval | None:
    """The bootstrap interval of ``path`` over the row's seeds × items, or None when the item data
    does not cover exactly the seeds whose summaries have the score (the report then falls back)."""
    with_score = {j.seed for j in row.jobs if j.status == "ok" and j.value(path) is not None}
    if not with_score or set(predictions) != with_score or (scores := seed_scores(predictions, path)) is None:
        return None
    return arm_interval(scores.scores, same_items=scores.same_items)


@dataclass
class Pairing:
    """One configuration against the baseline on items paired by (seed, item index)."""

    label: str
    pairs: dict[str, list[tuple[ItemKey, bool, bool]]] = field(default_factory=dict)  # seed -> (item, base, arm)
    skipped: int = 0  # same seed and index but a different item, or an item one side lacks

    @property
    def seeds(self) -> list[str]:
        return list(self.pairs)

    @property
    def hits(self) -> list[tuple[bool, bool]]:
        """(baseline right, arm right) for every pair of every seed."""
        return [(x, y) for pairs in self.pairs.values() for _, x, y in pairs]

    def discordant(self) -> tuple[int, int]:
        """(b, c): pairs only the baseline got right, pairs only the arm got right."""
        return sum(x and not y for x, y in self.hits), sum(y and not x for x, y in self.hits)

    def difference(self) -> Difference | None:
        """Arm minus baseline exact match, paired bootstrap over the seeds with pairs, then their items
        (drawn once for all seeds when every seed paired the same items)."""
        kept = [pairs for pairs in self.pairs.values() if pairs]
        if not kept:
            return None
        same = all([k for k, _, _ in pairs] == [k for k, _, _ in kept[0]] for pairs in kept)
        arm, base = ([np.array([p[i] for p in pairs], dtype=float) for pairs in kept] for i in (2, 1))
        return paired_difference(arm, base, same_items=same)


def pair(base_preds: Predictions, arm: Row, arm_preds: Predictions) -> Pairing:
    """Items matched by seed and index (same instruction, input and reference), each side's tuned
    answer scored by the runs' own exact match."""
    result = Pairing(arm.label)
    for seed in [s for s in base_preds if s in arm_preds]:
        pairs = result.pairs.setdefault(str(seed), [])
        left, right = base_preds[seed], arm_preds[seed]
        for i in range(max(len(left), len(right))):
            x, y = (left[i] if i < len(left) else {}), (right[i] if i < len(right) else {})
            if not x or not y or item_key(x) != item_key(y) or not all(isinstance(z.get("tuned"), str) for z in (x, y)):
                result.skipped += 1
            else:
                pairs.append((item_key(x), exact_match(x["tuned"], x["reference"]),
                              exact_match(y["tuned"], y["reference"])))
    return result


@dataclass(frozen=True)
class RowScore:
    """A configuration's score as the report shows it: the item-level bootstrap interval where the
    predictions allow, else the seeds' mean with a Student t interval cut at 0 and 1 (``interval``
    None); ``low``/``high`` are nan when there is no interval at all (one seed, no item data)."""

    mean: float
    low: float
    high: float
    interval: Interval | None


def row_score(row: Row, predictions: Predictions, path: str) -> RowScore | None:
    """The row's score behind ``path`` (a fraction in [0, 1]), or None when no job has it."""
    if (found := row_interval(row, predictions, path)) is not None:
        return RowScore(found.mean, found.low, found.high, found)
    if (stat := row.stat(path)) is None:
        return None
    mean, half, _ = stat
    if math.isnan(half):
        return RowScore(mean, math.nan, math.nan, None)
    return RowScore(mean, max(0.0, mean - half), min(1.0, mean + half), None)


JUDGE_KEY = "judge:"  # score columns "judge:<name>": a judge's 0 to 100 scores of the tuned answers


@dataclass
class JudgeScore:
    """A configuration's mean judge score (0 to 100) over its judged seeds × parsed items."""

    score: RowScore
    seeds: int  # seeds with parsed judge scores
    unparsable: int  # replies left out, over those seeds
    rubric: set[str]  # rubric hashes (more than one: not one measurement)


def judge_scores(rows: list[Row]) -> dict[str, list[JudgeScore | None]]:
    """``judge:<name>`` -> each row's judge score, for every judge that scored some job's tuned
    answers (``instructune judge``; the first successful job of each seed, as ``predictions_by_seed``)."""
    judged: list[dict[str, dict[str | None, list[dict[str, Any]]]]] = []
    for row in rows:
        found: dict[str, dict[str | None, list[dict[str, Any]]]] = {}
        for job in row.jobs:
            if job.status == "ok":
                for name, (_, lines) in finished_results(job.folder).items():
                    found.setdefault(name, {}).setdefault(job.seed, lines)
        judged.append(found)
    names = sorted({name for found in judged for name in found})
    return {JUDGE_KEY + name: [_judge_score(found.get(name, {})) for found in judged] for name in names}


def _judge_score(by_seed: dict[str | None, list[dict[str, Any]]]) -> JudgeScore | None:
    """The bootstrap interval over seeds × items of the parsed scores (items ordered by their index
    in predictions.jsonl; the same items for every seed unless unparsable replies differ)."""
    keys, scores, unparsable = [], [], 0
    for lines in by_seed.values():
        ordered = sorted(lines, key=lambda line: line["index"])
        unparsable += sum(line["score"] is None for line in ordered)
        parsed = [line for line in ordered if line["score"] is not None]
        if parsed:
            keys.append([(line["index"], *item_key(line)) for line in parsed])
            scores.append(np.array([float(line["score"]) for line in parsed]))
    if not scores:
        return None
    iv = arm_interval(scores, same_items=all(k == keys[0] for k in keys[1:]))
    rubric = {line.get("rubric_sha256", "?") for lines in by_seed.values() for line in lines}
    return JudgeScore(RowScore(iv.mean, iv.low, iv.high, iv), len(scores), unparsable, rubric)
