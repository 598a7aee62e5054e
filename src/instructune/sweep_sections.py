"""The statistical sections of the sweep report, as markdown lines: what the score intervals are and
how many seeds and items they rest on, tuned exact match pooled over items and seeds with a Wilson
interval, and each configuration against the first (exact McNemar and paired bootstrap, each
Holm-corrected across the report's comparisons)."""

from __future__ import annotations

import math

from instructune.bootstrap import DEFAULT_RESAMPLES, Difference
from instructune.stats import exact_mcnemar, holm, wilson_interval
from instructune.sweep_items import JUDGE_KEY, JudgeScore, Pairing, Predictions, RowScore, pair
from instructune.sweep_rows import Row


def cells(values: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in values) + " |"


def head(header: list[str]) -> list[str]:
    return [cells(header), "|" + "|".join("---" for _ in header) + "|"]


def score_cell(found: RowScore | None) -> str:
    """``mean% (low–high)``; † marks the Student t fallback (no item data), no brackets no interval."""
    if found is None:
        return "-"
    text = f"{100 * found.mean:.1f}%"
    if not math.isnan(found.low):
        text += f" ({100 * found.low:.1f}–{100 * found.high:.1f})" + ("" if found.interval else "†")
    return text


def judge_header(keys: list[str]) -> list[str]:
    """``judge`` for one judge, ``judge (<name>)`` for each of several."""
    names = [k.removeprefix(JUDGE_KEY) for k in keys]
    return ["judge"] if len(names) == 1 else [f"judge ({name})" for name in names]


def judge_cell(found: JudgeScore | None) -> str:
    """``mean (low–high)`` on the judge's 0 to 100 scale."""
    if found is None:
        return "-"
    s = found.score
    return f"{s.mean:.1f} ({s.low:.1f}–{s.high:.1f})"


def judge_notes(rows: list[Row], judges: dict[str, list[JudgeScore | None]]) -> list[str]:
    """What the judge columns are, and per configuration the seeds × items they rest on."""
    lines = []
    for key, column in judges.items():
        parts = []
        for row, found in zip(rows, column, strict=True):
            if found is None:
                continue
            iv, ok = found.score.interval, len({j.seed for j in row.jobs if j.status == "ok"})
            text = f"`{row.label}` {found.seeds} of {ok} seed{'s' * (ok > 1)}, {iv.items if iv else 0} items"
            text += f", {found.unparsable} unparsable left out" if found.unparsable else ""
            text += ", MIXED RUBRICS" if len(found.rubric) > 1 else ""
            parts.append(text)
        lines.append(f"- `{key.removeprefix(JUDGE_KEY)}`: {'; '.join(parts)}.")
    if not lines:
        return []
    return ["Judge: the 0–100 scores a judge model gave the tuned answers (`instructune judge`, "
            "`<job>/judge/<name>.jsonl`), mean over every parsed item of every judged seed; in brackets the same "
            "95% bootstrap interval over seeds, then items. Replies without a score are left out and counted. "
            "Judged seeds and items:", "", *lines, ""]


def _n(label: str, found: RowScore | None) -> str | None:
    """How many seeds and items a configuration's tuned exact match interval rests on."""
    if found is None or found.interval is None:
        return None
    iv = found.interval
    if iv.same_items:
        text = f"{iv.seeds} seed{'s' * (iv.seeds > 1)} × {iv.items // iv.seeds} items"
        text += " (the same items for every seed)" if iv.seeds > 1 else ""
    else:
        text = f"{iv.seeds} seeds, {iv.items} items (each seed its own items: drawn within each seed)"
    return f"`{label}` {text}" + (" (one seed: the interval covers item sampling only)" if iv.seeds == 1 else "")


def interval_notes(labels: list[str], tuned: list[RowScore | None]) -> list[str]:
    """The lines under the main table: what the brackets are, and n per configuration."""
    counts = [text for label, found in zip(labels, tuned, strict=True) if (text := _n(label, found))]
    return [f"Scores (exact match, ROUGE-L F1) are means over every test item of every seed; in brackets the 95% "
            f"percentile bootstrap interval (B = {DEFAULT_RESAMPLES} resamples, each drawing the seeds with "
            "replacement and then the test items: once for all seeds when every seed has the same items, within "
            "each seed otherwise), so it covers seed-to-seed variation and test-item sampling and stays within "
            "0–100% (every item wrong, or every item right, gives a zero-width interval: the Wilson interval "
            "below still bounds such a score). † no item-level scores in predictions.jsonl (no predictions, no base answers, or no `seen` "
            "flag for seen / held-out): a 95% Student t interval over the seed means, cut at 0 and 100%. "
            "Validation loss: mean over seeds ± the 95% Student t half-width.", "",
            *([f"n (tuned EM): {'; '.join(counts)}.", ""] if counts else [])]


def wilson_section(rows: list[Row]) -> list[str]:
    """Tuned exact match pooled over every test item of every seed of a configuration (correct items
    from each summary's ``eval.tuned.all`` × ``eval.tuned.n``) with its 95% Wilson interval."""
    lines = head(["configuration", "seeds", "correct / n", "tuned EM", "95% Wilson interval"])
    for row in rows:
        counts = [(round(em * n), int(n)) for j in row.jobs if j.status == "ok"
                  and (em := j.value("eval.tuned.all")) is not None and (n := j.value("eval.tuned.n"))]
        right, n = sum(c for c, _ in counts), sum(n for _, n in counts)
        low, high = wilson_interval(right, n) if n else (math.nan, math.nan)
        lines.append(cells([f"`{row.label}`", str(len(counts)), f"{right} / {n}" if n else "-",
                            f"{100 * right / n:.1f}%" if n else "-",
                            f"{100 * low:.1f}% – {100 * high:.1f}%" if n else "-"]))
    return ["## Tuned exact match pooled over items and seeds", "",
            "Correct test items over all items of all seeds of a configuration (n = items × seeds) with the "
            "95% Wilson score interval. It counts items as independent draws: item sampling noise, not the "
            "seed-to-seed spread the bootstrap interval above also covers.", "", *lines, ""]


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else "<0.0001"


def _row(p: Pairing, mcnemar: float, mcnemar_holm: float, diff: Difference | None, diff_holm: float) -> str:
    n, (b, c) = len(p.hits), p.discordant()
    if not n or diff is None:
        return cells([f"`{p.label}`", str(n), *["-"] * 10])
    base, arm = (100 * sum(h[k] for h in p.hits) / n for k in (0, 1))
    return cells([f"`{p.label}`", str(n), f"{base:.1f}%", f"{arm:.1f}%", f"{arm - base:+.1f} pp", str(b), str(c),
                  _p(mcnemar), _p(mcnemar_holm), f"{100 * diff.low:+.1f} to {100 * diff.high:+.1f} pp",
                  _p(diff.p), _p(diff_holm)])


def paired_section(rows: list[Row], predictions: list[Predictions]) -> list[str]:
    """Every configuration against the first (``predictions[i]`` is row i's): exact McNemar p and the
    paired bootstrap, each Holm-adjusted over the comparisons that have pairs."""
    if len(rows) < 2:
        return []
    pairings = [pair(predictions[0], row, preds) for row, preds in zip(rows[1:], predictions[1:], strict=True)]
    tested = [p for p in pairings if p.hits]
    diffs = {id(p): d for p in tested if (d := p.difference()) is not None}
    mcnemar = {id(p): exact_mcnemar(*p.discordant()) for p in tested}
    mcnemar_holm = dict(zip(mcnemar, holm(list(mcnemar.values())), strict=True))
    boot_holm = dict(zip(diffs, holm([d.p for d in diffs.values()]), strict=True))
    lines = head(["configuration", "n pairs", "baseline EM", "arm EM", "difference", "b", "c", "McNemar p",
                  "Holm p", "bootstrap 95% interval", "bootstrap p", "Holm p (bootstrap)"])
    lines += [_row(p, mcnemar.get(id(p), 1.0), mcnemar_holm.get(id(p), 1.0), diffs.get(id(p)),
                   boot_holm.get(id(p), 1.0)) for p in pairings]
    notes = [f"`{p.label}`: {len(p.hits)} pairs over seeds {', '.join(p.seeds) or '(none in common)'}"
             + (f", {p.skipped} skipped (the items at the same seed and index differ, or one side lacks one)"
                if p.skipped else "") for p in pairings]
    return ["## Paired comparisons", "", f"Baseline: `{rows[0].label}` (the first configuration).", "", *lines, "",
            "Test: exact McNemar test (two-sided binomial test on the discordant pairs; b = baseline right and "
            "arm wrong, c = baseline wrong and arm right) on item-level pairs of tuned answers matched by seed and "
            "test item (same instruction, input and reference), scored by the runs' exact match, pooled over "
            "seeds: it counts every pair as independent (test-item sampling, not seed variation). And a paired "
            f"bootstrap of the difference arm − baseline (B = {DEFAULT_RESAMPLES}: seeds, then items, resampled "
            "with each pair kept together; 95% percentile interval; two-sided p = twice the smaller share of "
            f"resampled differences at or past 0, never below 2/(B + 1) = {2 / (DEFAULT_RESAMPLES + 1):.4f}). "
            "EM columns are over the paired items.", "",
            f"Correction: Holm over the k = {len(tested)} comparison(s) in this report, for each test separately.",
            "", "n: " + "; ".join(notes) + ".", ""]
