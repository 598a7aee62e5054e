"""The sweep report's sections read from summary.json blocks other than the scores: each configuration's
realised training mix (``mixture``: the examples training drew per task or source), its train ↔ evaluation
overlap (``overlap``) and, for ``stage=dpo`` sweeps, the preference statistics before and after (``dpo``)."""

from __future__ import annotations

import statistics
from typing import Any

from instructune.bootstrap import paired_difference
from instructune.sweep_items import Predictions, seed_scores
from instructune.sweep_rows import Row, mean_ci
from instructune.sweep_sections import cells, head

FULL_TABLE_GROUPS = 12  # more groups than this get a one-line spread instead of a row each


def _first(row: Row, key: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The block ``key`` of the row's first finished job, and that block in every finished job."""
    blocks = [j.summary[key] for j in row.jobs if j.status == "ok" and j.summary and j.summary.get(key)]
    return (blocks[0] if blocks else None), blocks


def mixture_section(rows: list[Row]) -> list[str]:
    """Per configuration: what share of the training draws each group got, against its configured rate."""
    lines: list[str] = []
    for row in rows:
        first, blocks = _first(row, "mixture")
        if first is None:
            continue
        groups = sorted(first["groups"])
        drawn = {g: statistics.fmean(b["groups"].get(g, {}).get("drawn", 0) for b in blocks) for g in groups}
        total = sum(drawn.values())
        how = (f"mixed by {first['by']}" + (f", weights {first['weights']}" if first.get("weights") else
                                            f", cap {first.get('cap')}, temperature {first.get('temperature')}")
               if first["by"] else "unmixed (every record once per epoch)")
        lines += [f"`{row.label}`: {how}; {total:.0f} training examples drawn (mean of {len(blocks)} job(s)) "
                  f"from {len(groups)} group(s).", ""]
        if total == 0:
            continue
        if len(groups) > FULL_TABLE_GROUPS:
            shares = sorted((100 * drawn[g] / total, g) for g in groups)
            lines += [f"Share of draws per group: min {shares[0][0]:.1f}% (`{shares[0][1]}`), median "
                      f"{statistics.median(s for s, _ in shares):.1f}%, max {shares[-1][0]:.1f}% (`{shares[-1][1]}`).",
                      ""]
            continue
        lines += head(["group", "records", "configured share", "drawn", "realised share"])
        for g in groups:
            info = first["groups"][g]
            rate = f"{100 * info['rate']:.1f}%" if "rate" in info else "-"
            lines.append(cells([f"`{g}`", str(info["records"]), rate, f"{drawn[g]:.0f}",
                                f"{100 * drawn[g] / total:.1f}%"]))
        lines.append("")
    return (["## Training mix", "", *lines] if lines else [])


def overlap_section(rows: list[Row]) -> list[str]:
    """Per configuration: evaluation records whose text (or prompt, or a near duplicate) training holds."""
    table: list[str] = []
    for row in rows:
        first, blocks = _first(row, "overlap")
        if first is None or first.get("method") is None:
            continue
        parts = []
        for split in ("validation", "test"):
            found = {(s["contaminated"], s["records"], s["exact"], s["same_prompt"], s["near"])
                     for b in blocks if (s := b.get(split))}
            if len(found) == 1:  # the same split in every job
                c, n, e, p, near = found.pop()
                parts.append(f"{c} / {n} ({e} / {p} / {near})")
            else:  # the split follows the seed (a file source): the range over the jobs
                parts.append(f"{min(f[0] for f in found)}–{max(f[0] for f in found)} / {first[split]['records']} "
                             f"over {len(blocks)} jobs" if found else "-")
        dropped = sorted({int(b.get("decontaminated", 0)) for b in blocks})
        table.append(cells([f"`{row.label}`", *parts, "–".join(map(str, dropped[:: max(len(dropped) - 1, 1)]))]))
    if not table:
        return []
    return ["## Train / evaluation overlap", "",
            "Evaluation records that training already holds: all (exact / same prompt / near duplicate: Jaccard "
            "of word n-grams at or above the threshold, summary.json `overlap.method`). `data.decontaminate=true` "
            "drops the training records involved.",
            "", *head(["configuration", "validation", "test", "training records dropped"]), *table, ""]


PREFERENCE_STATS = (("logp_margin", "log p(chosen) − log p(rejected)"), ("logp_accuracy", "chosen ranked first"),
                    ("chosen_nll", "chosen NLL per token"))


def preference_section(rows: list[Row], predictions: list[Predictions]) -> list[str]:
    """``stage=dpo`` sweeps: each configuration's preference statistics on the held-out pairs, at its start and
    after DPO, as mean ± 95% t half-width over its seeds, and its exact match after DPO minus at its start,
    paired by seed and test item (the start's answers are the runs' ``base`` answers)."""
    table: list[str] = []
    for row, answers in zip(rows, predictions, strict=True):
        jobs = [j for j in row.jobs if j.status == "ok" and j.summary and j.summary.get("dpo")]
        if not jobs:
            continue
        values = []
        for key, _ in PREFERENCE_STATS:
            for when in ("before", "after"):
                found = [float(v) for j in jobs if (v := (j.summary["dpo"].get(when) or {}).get(key)) is not None]
                values.append(_mean_ci_text(found))
        covered = set(answers) == {j.seed for j in jobs}  # item scores of exactly the jobs counted here
        table.append(cells([f"`{row.label}`", str(len(jobs)), _gain_over_start(answers) if covered else "-", *values]))
    if not table:
        return []
    header = ["configuration", "seeds", "EM, DPO − start (95% CI, p)",
              *[f"{label}, {when}" for _, label in PREFERENCE_STATS for when in ("start", "DPO")]]
    first = next(j for r in rows for j in r.jobs if j.status == "ok" and j.summary and j.summary.get("dpo"))
    info = first.summary["dpo"]
    n = (info.get("after") or info.get("before") or {}).get("n", "?")
    return ["## Preference pairs (stage=dpo)", "",
            f"On {n} {info.get('split', '?')} pairs; \"chosen ranked first\" is the share of pairs whose chosen answer "
            "has the higher log-probability. The exact-match change is over the test items, paired by seed and "
            "item (bootstrap as in the paired comparisons).", "", *head(header), *table, ""]


def _gain_over_start(predictions: Predictions) -> str:
    """Exact match after DPO minus at the start on the same items, by the paired bootstrap of the report."""
    tuned, start = seed_scores(predictions, "eval.tuned.all"), seed_scores(predictions, "eval.base.all")
    if tuned is None or start is None or tuned.keys != start.keys:
        return "-"
    d = paired_difference(tuned.scores, start.scores, same_items=tuned.same_items)
    return f"{100 * d.mean:+.1f} pp ({100 * d.low:+.1f} to {100 * d.high:+.1f}, p = {d.p:.3f})"


def _mean_ci_text(values: list[float]) -> str:
    if not values:
        return "-"
    mean, half, _ = mean_ci(values)
    return f"{mean:.3f}" + (f" ± {half:.3f}" if half == half else "")
