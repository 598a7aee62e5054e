"""The ratio study's report (``experiments/ratio_study``): each cell (instruction/output length level ×
number of training records) trains with the prompt masked (λ = 0) and with loss over the whole prompt
(λ = 1); the masking effect of a cell is the paired difference λ=1 − λ=0, regressed on log2(measured
ratio) and log2(N) (``bootstrap_fits``), and the slopes' signs are read against Shi et al. (2024) and
Huerta-Enochian & Ko (2024)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from instructune.bootstrap import paired_difference
from instructune.bootstrap_fits import Coefficient, regression
from instructune.run_folder import read_summary
from instructune.stats import holm
from instructune.study_report import ArmBudget, results
from instructune.world_study_report import interval, p_text, pct, rates, scores, signed


def _measured_ratio(runs: list[str]) -> tuple[float, float, float]:
    """Mean prompt tokens, response tokens and their ratio over the train split (summary.json lengths)."""
    got = [((read_summary(Path(r)) or {}).get("lengths") or {}).get("tokens", {}).get("train") for r in runs]
    got = [g for g in got if g]
    if not got:
        return float("nan"), float("nan"), float("nan")
    return tuple(float(np.mean([g[k] for g in got])) for k in ("prompt_mean", "response_mean", "ratio"))  # type: ignore[return-value]


def ratio_report(study: dict[str, Any], out_dir: Path, title: str) -> Path:
    """report.md and masking_effect.png in ``out_dir``. ``design.notes['cells']`` maps each arm to its
    cell: ``{"level": name, "n": records, "lambda": 0 or 1}``."""
    budget = max(study["design"]["budgets"])
    arms = results(study).get(budget, {})
    cells: dict[str, dict[str, Any]] = study["design"]["notes"]["cells"]
    pairs: dict[tuple[str, int], dict[float, ArmBudget]] = {}
    for arm, a in arms.items():
        c = cells[arm]
        pairs.setdefault((c["level"], int(c["n"])), {})[float(c["lambda"])] = a
    rows, fits = [], {"exact": [], "rouge": []}
    for (level, n), by_lambda in pairs.items():
        if 0.0 not in by_lambda or 1.0 not in by_lambda:
            continue
        masked, full = by_lambda[0.0], by_lambda[1.0]
        shared = [s for s in masked.seeds if s in full.seeds]
        runs = [r for arm, c in cells.items() if c["level"] == level and int(c["n"]) == n for r in study["final"][arm]]
        prompt, response, ratio = _measured_ratio(runs)
        diffs = {}
        for metric in ("exact", "rouge"):
            x = scores(full, "all", metric)[[full.seeds.index(s) for s in shared]]
            y = scores(masked, "all", metric)[[masked.seeds.index(s) for s in shared]]
            diffs[metric] = paired_difference(x, y)
            fits[metric].append(([math.log2(ratio), math.log2(n)], x - y))
        rows.append((level, n, prompt, response, ratio, masked, full, diffs, len(shared)))
    adjusted = holm([r[7]["exact"].p for r in rows])
    lines = [f"# {title}", "",
             "Each cell trains the same model twice per seed: prompt masked out of the loss (λ = 0) and loss over "
             "the whole prompt (λ = 1). Cells: instruction/output length level × training records N. The ratio is "
             "measured: mean prompt tokens (template and instruction) over mean response tokens (with EOS) of the "
             f"train split. Shared overrides: `{' '.join(study['design']['base'])}`, {budget} steps, seeds "
             f"{', '.join(map(str, study['design']['seeds']))}, every run at the fixed learning rate "
             f"{rates(study)}. Wall time "
             f"{study.get('wall_seconds', '?')} s.", "",
             "Test exact match over seeds × items, mean and 95% bootstrap interval; masking effect Δ = λ=1 − λ=0 "
             f"paired by seed and item, p Holm-corrected over the {len(rows)} cells.", "",
             "| length level | prompt / response tokens (ratio) | N | EM λ=0 | EM λ=1 | Δ EM (λ=1 − λ=0) | p (Holm) | "
             "Δ ROUGE-L | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for (level, n, prompt, response, ratio, masked, full, diffs, k), p in zip(rows, adjusted, strict=True):
        lines.append(f"| {level} | {prompt:.1f} / {response:.1f} ({ratio:.1f}) | {n} | {pct(interval(masked, 'all'))} | "
                     f"{pct(interval(full, 'all'))} | {signed(diffs['exact'])} | {p_text(p)} | "
                     f"{signed(diffs['rouge'])} | {k} |")
    coefficients: dict[str, list[Coefficient]] = {}
    if len(rows) > 3:
        for metric in ("exact", "rouge"):
            coefficients[metric] = regression(fits[metric], ("intercept", "log2 ratio", "log2 N"))
        lines += ["", "## The masking effect against ratio and N", "",
                  "Δ (points) = b0 + b1·log2(ratio) + b2·log2(N), least squares over the cells; intervals and p "
                  "from refits to bootstrap resamples of every cell (seeds, then items).", "",
                  "| score | b1: per doubling of the ratio | p | b2: per doubling of N | p |", "|---|---|---|---|---|"]
        for metric, cs in coefficients.items():
            lines.append(f"| Δ {'exact match' if metric == 'exact' else 'ROUGE-L'} | {signed(cs[1])} | {p_text(cs[1].p)} | "
                         f"{signed(cs[2])} | {p_text(cs[2].p)} |")
        mean_effect = float(np.mean([r[7]["exact"].mean for r in rows]))
        lines += ["", "## Against the anchors", "", anchor_paragraph(coefficients, mean_effect)]
    if rows:
        _ratio_plot(rows, out_dir / "masking_effect.png", title)
        lines += ["", "![masking effect by ratio and N](masking_effect.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _verdict(c: Coefficient, expected: int) -> str:
    if c.low > 0 or c.high < 0:
        return "the direction Shi found" if (1 if c.low > 0 else -1) == expected else "against the direction Shi found"
    return "not distinguishable from zero"


def anchor_paragraph(cs: dict[str, list[Coefficient]], mean_effect: float) -> str:
    """One paragraph: do the fitted slopes point where Shi et al. (2024) and Huerta-Enochian & Ko (2024)
    found them? ``cs``: the fits per score (``exact``, ``rouge``); ``mean_effect``: the mean exact-match
    Δ over the cells (its sign says whether a growing Δ means a growing or a shrinking effect)."""
    parts = []
    for metric, label in (("exact", "exact match"), ("rouge", "ROUGE-L")):
        if metric not in cs:
            continue
        ratio, n = cs[metric][1], cs[metric][2]
        parts.append(f"on {label}, the masking effect moves by {signed(ratio)} points per doubling of the ratio "
                     f"(p {p_text(ratio.p)}: {_verdict(ratio, 1)}) and by {signed(n)} points per doubling of N "
                     f"(p {p_text(n.p)}: {_verdict(n, -1)})")
    ratio = cs["exact"][1]
    if ratio.low > 0 or ratio.high < 0:
        grows = (ratio.estimate > 0) == (mean_effect > 0)
        he = ("the size of the effect grows with the ratio, as they found" if grows else
              "the size of the effect shrinks as the ratio grows, against what they found")
    else:
        he = "the data cannot tell whether the size of the effect changes with the ratio"
    return (
        "Shi et al. (2024, \"Instruction Tuning With Loss Over Instructions\") find that loss over the instruction "
        "helps more when instructions are long relative to outputs and when training data is small: a positive "
        "slope of Δ = λ=1 − λ=0 on log2(ratio) and a negative one on log2(N). Here, " + "; ".join(parts) + ". "
        "Huerta-Enochian & Ko (2024, \"Instruction Fine-Tuning: Does Prompt Loss Matter?\") find that the prompt-loss "
        "weight matters for short-completion data and hardly for long completions; on exact match here " + he + ". "
        "They also find a small non-zero weight (about 0.01-0.5) best for short completions: this grid compares only "
        "λ = 0 with λ = 1, so it does not test that (the masking study's λ grid does, on the version-1 world). The "
        "fits rest on few cells of one tiny model and world at one fixed learning rate: read them as the direction "
        "on this world, not as a size to expect elsewhere.")


def _ratio_plot(rows: list[tuple], out: Path, title: str) -> Path:
    from instructune.sweep_plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for n in sorted({r[1] for r in rows}):
        points = sorted((r for r in rows if r[1] == n), key=lambda r: r[4])
        d = [r[7]["exact"] for r in points]
        ax.errorbar([r[4] for r in points], [100 * x.mean for x in d],
                    yerr=[[100 * (x.mean - x.low) for x in d], [100 * (x.high - x.mean) for x in d]],
                    marker="o", capsize=3, label=f"N = {n}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt / response tokens (train split)")
    ax.set_ylabel("Δ exact match, λ=1 − λ=0 (points)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


__all__ = ["anchor_paragraph", "ratio_report"]
