"""Reports of the two studies on the version-2 world (``experiments/task_count_study``, and
``experiments/ratio_study`` through ``ratio_report``), from a study folder written by ``instructune.study``.

- Task count: each arm trains on k seen families. Held-out compositions, trained families and
  paraphrased items are scored separately (per-item data from predictions.jsonl), each arm is compared
  with the untuned base model on the held-out compositions (paired bootstrap, Holm-corrected), and the
  held-out score is regressed on log2(k) (``bootstrap_fits``).
- Ratio: each cell (instruction/output length ratio level × number of training records) trains with
  the prompt masked (λ = 0) and with loss over the whole prompt (λ = 1). The masking effect of a cell is
  the paired difference λ=1 − λ=0; it is regressed on log2(measured ratio) and log2(N), and the signs
  are compared with Shi et al. (2024).

Every interval is a 95% two-level bootstrap over seeds and test items (``instructune.bootstrap``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from instructune.bootstrap import Difference, Interval, arm_interval, paired_difference
from instructune.bootstrap_fits import Coefficient, regression
from instructune.stats import holm
from instructune.study_report import ArmBudget, load_arm, results
from instructune.world.families import HELD_OUT
from instructune.world.splits import PARAPHRASE_GROUP

KINDS = {"held_out": "held-out compositions", "trained": "trained families", "paraphrase": "paraphrased",
         "all": "all test items"}


def item_mask(items: list[dict[str, Any]], kind: str) -> np.ndarray:
    """Which test items count for ``kind``: the designed held-out compositions (never the seen families
    a small-k arm happens not to train on), the families the run trained on, the paraphrased items."""
    def member(line: dict[str, Any]) -> bool:
        if kind == "all":
            return True
        if kind == "paraphrase":
            return line.get("group") == PARAPHRASE_GROUP
        if line.get("group"):
            return False
        if kind == "held_out":
            return line.get("task") in HELD_OUT
        return kind == "trained" and line.get("seen") is True
    return np.array([member(x) for x in items], dtype=bool)


def scores(a: ArmBudget, kind: str, metric: str = "exact") -> np.ndarray:
    return (a.exact if metric == "exact" else a.rouge)[:, item_mask(a.items, kind)]


def interval(a: ArmBudget, kind: str, metric: str = "exact") -> Interval | None:
    x = scores(a, kind, metric)
    return arm_interval(x) if x.size else None


def pct(i: Interval | None) -> str:
    return "-" if i is None else f"{100 * i.mean:.1f}% ({100 * i.low:.1f}–{100 * i.high:.1f})"


def signed(d: Difference | Coefficient) -> str:
    mean = d.mean if isinstance(d, Difference) else d.estimate
    return f"{100 * mean:+.1f} ({100 * d.low:+.1f} to {100 * d.high:+.1f})"


def p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def rates(study: dict[str, Any]) -> str:
    rates = sorted({t["lr"] for t in study["tuning"].values()})
    return ", ".join(f"{r:.3g}" for r in rates) + ("" if all(t.get("fixed") for t in study["tuning"].values())
                                                   else " (tuned per arm)")


def _base(study: dict[str, Any], arm: str, budget: int) -> ArmBudget | None:
    return load_arm("base", study["final"][arm], budget, who="base")


# ----------------------------------------------------------------------------------- task count

def task_count_report(study: dict[str, Any], out_dir: Path, title: str) -> Path:
    """report.md and held_out_by_task_count.png in ``out_dir``."""
    budget = max(study["design"]["budgets"])
    arms = results(study).get(budget, {})
    counts: dict[str, int] = study["design"]["notes"]["task_count"]
    rows, comparisons, cells = [], [], {"exact": [], "rouge": []}
    for arm, a in arms.items():
        base = _base(study, arm, budget)
        for metric in ("exact", "rouge"):
            x = scores(a, "held_out", metric)
            cells[metric].append(([math.log2(counts[arm])], x))
            if base is not None:
                shared = [s for s in a.seeds if s in base.seeds]
                comparisons.append((arm, metric, paired_difference(
                    x[[a.seeds.index(s) for s in shared]],
                    scores(base, "held_out", metric)[[base.seeds.index(s) for s in shared]])))
        rows.append(arm)
    adjusted = dict(zip(((c[0], c[1]) for c in comparisons), holm([c[2].p for c in comparisons]), strict=True))
    found = {(c[0], c[1]): c[2] for c in comparisons}
    first = next(iter(arms.values()), None)
    base = _base(study, next(iter(arms)), budget) if arms else None
    n_held = int(item_mask(first.items, "held_out").sum()) if first else 0
    lines = [f"# {title}", "",
             f"Arms: training on k of the world's 58 seen families, k = {', '.join(str(counts[a]) for a in rows)}; "
             f"the k families are the first k of an order shuffled by the training seed (nested subsets per "
             f"seed). Shared overrides: `{' '.join(study['design']['base'])}`, {budget} steps, learning rate "
             f"{rates(study)}, seeds {', '.join(map(str, study['design']['seeds']))}. Wall time "
             f"{study.get('wall_seconds', '?')} s.", "",
             f"Held-out compositions: the 12 families (× {n_held // 12 if n_held else 0} items) that combine two "
             "seen skills in a pairing no training family has. Trained families: the test items of the k "
             "families the run trained on (fewer items for small k). Paraphrased: every seen family's test "
             "items asked in a wording never trained on (all 58 families, trained on or not).", "",
             "Mean and 95% bootstrap interval over seeds × items (B = 2000). Δ vs base: the arm minus the untuned "
             f"base model on the held-out compositions, paired by item, p Holm-corrected over all "
             f"{len(comparisons)} comparisons (exact match and ROUGE-L, every arm).", "",
             "| k families | n seeds | trained families EM | paraphrased EM | held-out EM | held-out ROUGE-L | "
             "Δ held-out EM vs base | p (Holm) | Δ held-out ROUGE-L vs base | p (Holm) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in rows:
        a = arms[arm]
        cells_ = []
        for metric in ("exact", "rouge"):
            d = found.get((arm, metric))
            cells_ += ["-", "-"] if d is None else [signed(d), p_text(adjusted[(arm, metric)])]
        lines.append(f"| {counts[arm]} | {len(a.seeds)} | {pct(interval(a, 'trained'))} | "
                     f"{pct(interval(a, 'paraphrase'))} | {pct(interval(a, 'held_out'))} | "
                     f"{pct(interval(a, 'held_out', 'rouge'))} | {' | '.join(cells_)} |")
    if base is not None:
        lines += ["", f"Untuned base model: held-out EM {pct(interval(base, 'held_out'))}, held-out ROUGE-L "
                  f"{pct(interval(base, 'held_out', 'rouge'))}, paraphrased EM {pct(interval(base, 'paraphrase'))}."]
    trend: dict[str, Coefficient] = {}
    if len(rows) >= 3:
        for metric in ("exact", "rouge"):
            trend[metric] = regression(cells[metric], ("intercept", "per doubling of k"))[1]
        lines += ["", "## Trend", "",
                  "Held-out score regressed on log2(k) over the arms (ordinary least squares on the arms' means; "
                  "intervals and p from refits to bootstrap resamples of every arm):", "",
                  "| score | change per doubling of k (points) | p |", "|---|---|---|",
                  *(f"| held-out {'exact match' if m == 'exact' else 'ROUGE-L'} | {signed(c)} | {p_text(c.p)} |"
                    for m, c in trend.items())]
    if arms:
        _plot(arms, counts, base, out_dir / "held_out_by_task_count.png", title)
        lines += ["", "![held-out score by task count](held_out_by_task_count.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plot(arms: dict[str, ArmBudget], counts: dict[str, int], base: ArmBudget | None, out: Path, title: str) -> Path:
    from instructune.sweep_plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, label in ((axes[0], "exact", "exact match"), (axes[1], "rouge", "ROUGE-L F1")):
        for kind, marker in (("held_out", "o"), ("paraphrase", "s"), ("trained", "^")):
            points = [(counts[arm], interval(a, kind, metric)) for arm, a in arms.items()]
            points = [(k, i) for k, i in points if i is not None]
            if not points:
                continue
            ax.errorbar([k for k, _ in points], [100 * i.mean for _, i in points],
                        yerr=[[100 * (i.mean - i.low) for _, i in points], [100 * (i.high - i.mean) for _, i in points]],
                        marker=marker, capsize=3, label=KINDS[kind])
        if base is not None:
            held = interval(base, "held_out", metric)
            if held is not None:
                ax.axhline(100 * held.mean, color="grey", linestyle=":", label="base, held-out")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(counts.values()), [str(k) for k in sorted(counts.values())])
        ax.set_xlabel("training task families (k)")
        ax.set_ylabel(f"test {label} (%)")
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


__all__ = ["interval", "item_mask", "p_text", "pct", "scores", "signed", "task_count_report"]
