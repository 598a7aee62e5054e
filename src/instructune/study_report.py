"""The report of a study (``instructune.study``): how each arm's learning rate was chosen on the
validation split, then every arm at its tuned rate on the test split at every training budget, with
two-way bootstrap intervals over seeds × test items, paired comparisons with the baseline arm (paired
bootstrap and exact McNemar, Holm-corrected over all the report's comparisons) and learning curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instructune.bootstrap import Difference, Interval, arm_interval, paired_difference
from instructune.run_folder import read_predictions, read_summary
from instructune.stats import exact_mcnemar, holm
from instructune.sweep_items import score

GROUPS = ("all", "seen", "held_out")


@dataclass
class ArmBudget:
    """One arm at one budget: per seed, the test items' exact match (and ROUGE-L), items aligned."""

    arm: str
    budget: int
    seeds: list[int]
    items: list[dict[str, Any]]  # the first seed's prediction lines (instruction, reference, task, seen)
    exact: np.ndarray  # seeds × items, 0/1
    rouge: np.ndarray  # seeds × items, ROUGE-L F1
    validation: list[float]  # per seed: validation exact match at this budget (what choices are made on)


def _in_group(line: dict[str, Any], group: str) -> bool:
    if group == "all":
        return True
    if line.get("group"):  # a named group (the world's paraphrases) is in neither seen nor held_out
        return line["group"] == group
    return bool(line.get("task")) and line.get("seen") == (group == "seen")


def load_arm(arm: str, runs: list[str], budget: int, who: str | None = None) -> ArmBudget | None:
    """The final runs of ``arm`` scored at ``budget`` (predictions.jsonl column ``tuned@<budget>``, or
    ``who``: ``base`` for the untuned model's answers in the same runs)."""
    who = who or f"tuned@{budget}"
    seeds, rows, items, validation = [], [], None, []
    for run in runs:
        summary, lines = read_summary(Path(run)) or {}, read_predictions(Path(run))
        if summary.get("status") != "ok" or not lines or who not in lines[0]:
            continue
        keys = [(x["instruction"], x["input"], x["reference"]) for x in lines]
        if items is None:
            items = lines
        elif keys != [(x["instruction"], x["input"], x["reference"]) for x in items]:
            raise ValueError(f"{run}: other test items than the arm's first run; the study pairs items across seeds")
        seeds.append(int(summary["config"]["seed"]))
        rows.append(lines)
        chosen_on = (((summary.get("budgets") or {}).get(str(budget)) or {}).get("selection") or {}).get("all")
        if chosen_on is not None:
            validation.append(float(chosen_on))
    if not rows:
        return None
    exact = np.array([[score(x, who, "exact match") for x in lines] for lines in rows])
    rouge = np.array([[score(x, who, "rougeL") for x in lines] for lines in rows])
    return ArmBudget(arm, budget, seeds, items, exact, rouge, validation)


def _columns(a: ArmBudget, group: str) -> np.ndarray:
    return np.array([_in_group(x, group) for x in a.items], dtype=bool)


def interval(a: ArmBudget, group: str = "all", metric: str = "exact") -> Interval | None:
    cols = _columns(a, group)
    if not cols.any():
        return None
    return arm_interval((a.exact if metric == "exact" else a.rouge)[:, cols])


def compare(a: ArmBudget, base: ArmBudget) -> tuple[Difference, float, int]:
    """``a`` minus ``base`` on exact match, paired by seed and item (the seeds both ran): the paired
    bootstrap, and the exact McNemar p on the discordant (seed, item) pairs pooled over seeds."""
    shared = [s for s in a.seeds if s in base.seeds]
    x = a.exact[[a.seeds.index(s) for s in shared]]
    y = base.exact[[base.seeds.index(s) for s in shared]]
    b, c = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    return paired_difference(x, y), exact_mcnemar(b, c), len(shared)


def _pct(i: Interval | None) -> str:
    return "-" if i is None else f"{100 * i.mean:.1f}% ({100 * i.low:.1f}–{100 * i.high:.1f})"


def _signed(d: Difference) -> str:
    return f"{100 * d.mean:+.1f} ({100 * d.low:+.1f} to {100 * d.high:+.1f})"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def tuning_section(study: dict[str, Any]) -> list[str]:
    """Per arm: every learning rate tried with its validation exact match / ROUGE-L, the choice, and a
    flag when the choice is still at an edge of the grid."""
    lines = ["## Learning rates, chosen on the validation split", "",
             f"Seed {study['design']['tuning_seed']} (not a final seed), {max(study['design']['budgets'])} steps; "
             "the rate with the best validation exact match (ties: ROUGE-L, then validation loss), the grid "
             f"extended by x{study['design']['grid_factor']:g} past an edge the best rate sat on "
             f"(at most {study['design']['max_extensions']} times).", "",
             "| arm | learning rates tried: validation exact match / ROUGE-L | chosen | bracketed |",
             "|---|---|---|---|"]
    if all(t.get("fixed") for t in study["tuning"].values()):
        rates = ", ".join(f"{arm} {t['lr']:.3g}" for arm, t in study["tuning"].items())
        return ["## Learning rates", "", f"Not tuned: every arm trains at a fixed rate ({rates}).", ""]
    for arm, tuned in study["tuning"].items():
        tried = "; ".join(f"{r['lr']:.3g}: {100 * r['validation']['all']:.1f}% / {100 * r['validation']['rougeL/all']:.1f}"
                          if r.get("validation") else f"{r['lr']:.3g}: -" for r in tuned["runs"])
        flag = "yes" if tuned["edge"] is None else f"**no: best at the {tuned['edge']} edge**"
        lines.append(f"| {arm} | {tried} | {tuned['lr']:.3g} | {flag} |")
    return lines + [""]


def results(study: dict[str, Any]) -> dict[int, dict[str, ArmBudget]]:
    budgets = sorted(study["design"]["budgets"])
    found: dict[int, dict[str, ArmBudget]] = {}
    for budget in budgets:
        for arm, runs in study["final"].items():
            loaded = load_arm(arm, runs, budget)
            if loaded is not None:
                found.setdefault(budget, {})[arm] = loaded
    return found


def results_section(study: dict[str, Any], found: dict[int, dict[str, ArmBudget]]) -> tuple[list[str], list[dict]]:
    """One table per budget; the p-values are Holm-corrected over every comparison of every budget."""
    baseline = study["design"].get("baseline") or next(iter(study["final"]))
    comparisons = [(budget, arm, *compare(a, arms[baseline])) for budget, arms in found.items()
                   for arm, a in arms.items() if arm != baseline and baseline in arms]
    boot_holm = holm([c[2].p for c in comparisons])
    mcnemar_holm = holm([c[3] for c in comparisons])
    by_key = {(c[0], c[1]): (c[2], c[3], boot, mc, c[4])
              for c, boot, mc in zip(comparisons, boot_holm, mcnemar_holm, strict=True)}
    first = next(iter(next(iter(found.values())).values()), None) if found else None
    n_items = first.exact.shape[1] if first is not None else 0
    lines = ["## Every arm at its tuned learning rate, test split", "",
             f"Exact match and ROUGE-L over {len(study['design']['seeds'])} seeds × {n_items} test items: mean and "
             "95% two-way bootstrap interval (seeds, then items; B = 2000). Δ: the arm minus the baseline "
             f"(**{baseline}**) paired by seed and item, with the paired-bootstrap p and the exact McNemar p on "
             f"the discordant pairs pooled over seeds, both Holm-corrected over all {len(comparisons)} "
             "comparisons of this report. The paired bootstrap resamples seeds too and is the one to trust: "
             "McNemar treats every (seed, item) pair as independent. Validation EM: mean over seeds on the "
             "validation split at that budget (the split choices are made on; the test columns are for claims).",
             ""]
    curve: list[dict] = []
    for budget, arms in found.items():
        lines += [f"### {budget} steps", "",
                  "| arm | lr | n seeds | validation EM | exact match | seen | held-out | ROUGE-L | Δ exact match vs baseline "
                  "| p (bootstrap, Holm) | p (McNemar, Holm) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for arm, a in arms.items():
            em, rouge = interval(a), interval(a, "all", "rouge")
            found_cmp = by_key.get((budget, arm))
            delta = ("baseline", "", "") if found_cmp is None else (
                _signed(found_cmp[0]), _p(found_cmp[2]), _p(found_cmp[3]))
            val = f"{100 * float(np.mean(a.validation)):.1f}%" if a.validation else "-"
            lines.append(f"| {arm} | {study['tuning'][arm]['lr']:.3g} | {len(a.seeds)} | {val} | {_pct(em)} | "
                         f"{_pct(interval(a, 'seen'))} | "
                         f"{_pct(interval(a, 'held_out'))} | {_pct(rouge)} | {delta[0]} | {delta[1]} | {delta[2]} |")
            curve.append({"arm": arm, "budget": budget, "mean": em.mean, "low": em.low, "high": em.high,
                          "seeds": len(a.seeds)})
        lines.append("")
    return lines, curve


def learning_curves(curve: list[dict], out: Path, title: str) -> Path:
    """Test exact match against training steps per arm, with the bootstrap intervals."""
    from instructune.sweep_plots import pyplot, save_figure, score_axis

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    arms = list(dict.fromkeys(p["arm"] for p in curve))
    for k, arm in enumerate(arms):
        points = sorted((p for p in curve if p["arm"] == arm), key=lambda p: p["budget"])
        x = [p["budget"] * (1 + 0.015 * (k - len(arms) / 2)) for p in points]  # small offsets: bars stay apart
        y = [100 * p["mean"] for p in points]
        err = [[100 * (p["mean"] - p["low"]) for p in points], [100 * (p["high"] - p["mean"]) for p in points]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=arm)
    score_axis(ax, max((100 * p["high"] for p in curve), default=0.0))
    ax.set_xlabel("training steps (budget)")
    ax.set_ylabel("test exact match (%)")
    ax.set_xticks(sorted({p["budget"] for p in curve}))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def base_score(study: dict[str, Any]) -> str | None:
    """The untuned base model's test exact match (the same for every run of the study)."""
    for runs in study["final"].values():
        for run in runs:
            base = ((read_summary(Path(run)) or {}).get("eval") or {}).get("base")
            if base:
                return f"{100 * base['all']:.1f}% (seen {100 * base.get('seen', 0):.1f}%, held-out " \
                       f"{100 * base.get('held_out', 0):.1f}%)"
    return None


def write_study_report(study: dict[str, Any], out_dir: Path, title: str, suffix: str = "") -> Path:
    """report<suffix>.md and learning_curves<suffix>.png in ``out_dir``; returns the report's path."""
    found = results(study)
    lines, curve = results_section(study, found)
    design = study["design"]
    head = [f"# {title}", "",
            f"Arms: {', '.join(a['name'] for a in design['arms'])}. Shared overrides: `{' '.join(design['base'])}`. "
            f"Budgets {', '.join(map(str, sorted(design['budgets'])))} steps (one constant-rate run per seed, the "
            f"test split scored at each), seeds {', '.join(map(str, design['seeds']))}. Wall time "
            f"{study.get('wall_seconds', '?')} s.", ""]
    base = base_score(study)
    if base:
        head += [f"Base model (untuned) test exact match: {base}.", ""]
    report = [*head, *tuning_section(study), *lines]
    if curve:
        learning_curves(curve, out_dir / f"learning_curves{suffix}.png", title)
        report += [f"![learning curves](learning_curves{suffix}.png)", ""]
    path = out_dir / f"report{suffix}.md"
    path.write_text("\n".join(report))
    return path


__all__ = ["ArmBudget", "load_arm", "interval", "compare", "results", "write_study_report"]
