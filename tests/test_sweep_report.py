"""The sweep report: exact aggregation over seeds on written summaries; item-level bootstrap intervals,
Wilson intervals and Holm-corrected paired tests on written predictions, each checked against numbers
worked out in the test."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml

from instructune import sweep_report
from instructune.bootstrap import arm_interval, paired_difference
from instructune.sweep_items import seed_scores
from instructune.sweep_report import collect, write_report


def _job(root, num, overrides, summary):
    job = root / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))


def _ok(em, loss, trainable=100, held_out=0.0):
    return {"status": "ok", "eval": {"tuned": {"all": em, "seen": em, "held_out": held_out, "rougeL/all": em},
                                     "base": {"all": 0.0}},
            "metrics": {"val/loss": loss}, "params": {"trainable": trainable}, "wall_seconds": 10.0,
            "throughput": {"real_tokens_per_s": 1000.0 * (1 + em), "mfu": 0.2, "train_seconds": 8.0}}


def test_without_predictions_scores_fall_back_to_t_intervals_cut_at_0_and_failed_rows(tmp_path):
    for i, (em, seed, held_out) in enumerate([(0.5, 1, 0.0), (0.6, 2, 0.0), (0.7, 3, 0.3)]):
        _job(tmp_path, i, ["peft=lora", f"seed={seed}"], _ok(em, 1.0 + em, held_out=held_out))
    _job(tmp_path, 3, ["peft=bitfit", "seed=1"], {"status": "failed", "error": "ModelError: needs bias terms"})
    _job(tmp_path, 4, ["peft=ia3", "seed=1"], None)
    rows = collect(tmp_path)
    assert [r.label for r in rows] == ["peft=lora", "peft=bitfit", "peft=ia3"]
    mean, half, n = rows[0].stat("eval.tuned.all")
    # mean 0.6, sd 0.1, t(0.975, 2) = 4.303: half-width 4.303 * 0.1 / sqrt(3)
    assert (n, round(mean, 6), round(half, 6)) == (3, 0.6, round(4.303 * 0.1 / math.sqrt(3), 6))
    report = write_report(tmp_path).read_text()
    # no predictions.jsonl: the t interval over seeds, marked †; held-out 0, 0, 0.3: mean 0.1, sd sqrt(0.03),
    # 0.1 ± 4.303 · sqrt(0.03 / 3) = 0.1 ± 0.4303, cut at 0: 0.0–53.0 (the t interval alone goes below 0)
    assert round(4.303 * math.sqrt(0.03 / 3), 4) == 0.4303
    assert ("| `peft=lora` | 3 | - | 60.0% (35.2–84.8)† | 60.0% (35.2–84.8)† | 10.0% (0.0–53.0)† | 0.0% (0.0–0.0)† | "
            "60.0% (35.2–84.8)† | 1.600 ± 0.248 | 100 | 10.0 | 1,600 | 20.0% | ok |") in report
    assert "† no item-level scores in predictions.jsonl" in report and "n (tuned EM)" not in report
    assert "| `peft=bitfit` | 1 | - | - | - | - | - | - | - | - | - | - | - | 1 failed: failed: ModelError: needs bias terms |" in report
    assert "no summary (killed before it finished?)" in report
    # the two plots these summaries allow (no CSV logs: no validation-loss curve), drawn, not blank
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["cost.png", "exact_match.png"]
    for name in ("cost.png", "exact_match.png"):
        image = plt.imread(tmp_path / name)
        assert image.ndim == 3 and len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 2


WORDS = [("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("light", "dark"), ("wet", "dry")]


def _predicted(root, num, overrides, right, base=None, seen=None, answers=None):
    """A finished job with predictions.jsonl: the tuned answer right where ``right`` says (else "no
    idea"), or ``answers`` as given; the base model right where ``base`` says; a ``seen`` flag per item."""
    job = root / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    lines = []
    for i, ((word, ref), hit) in enumerate(zip(WORDS, right, strict=True)):
        line = {"instruction": "Opposite?", "input": word, "reference": ref, "task": "antonym",
                "tuned": answers[i] if answers else (ref if hit else "no idea")}
        if base is not None:
            line["base"] = ref if base[i] else "?"
        if seen is not None:
            line["seen"] = seen[i]
        lines.append(line)
    (job / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    tuned = {"all": sum(right) / len(right), "n": len(right), "rougeL/all": 0.5}
    if seen is not None:
        tuned |= {g: float(np.mean([h for h, s in zip(right, seen, strict=True) if s == flag]))
                  for g, flag in (("seen", True), ("held_out", False))}
    summary = {"status": "ok", "eval": {"tuned": tuned, "base": {"all": float(np.mean(base))} if base else None}}
    (job / "summary.json").write_text(json.dumps(summary))


def _cell(found) -> str:
    return f"{100 * found.mean:.1f}% ({100 * found.low:.1f}–{100 * found.high:.1f})"


def _wilson(k: int, n: int) -> str:
    """The Wilson score interval by its formula: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    z, p = NormalDist().inv_cdf(0.975), k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return f"{100 * (centre - half) / (1 + z * z / n):.1f}% – {100 * (centre + half) / (1 + z * z / n):.1f}%"


LORA = [[1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0]]  # baseline: 4 of 12
IA3 = [[1, 1, 1, 1, 0, 1], [1, 1, 1, 0, 1, 0]]  # arm: 9 of 12; only the arm right on 3 + 2 items, never only lora


def test_a_2_arm_2_seed_sweep_prints_bootstrap_wilson_and_holm_paired_p(tmp_path, monkeypatch):
    kept = {}

    def keep(fig, path):  # the figure kept open to be read back, not written
        kept[path.name] = fig
        return path

    monkeypatch.setattr(sweep_report, "save_figure", keep)
    for num, (label, rows) in enumerate([("lora", LORA), ("ia3", IA3)]):
        for seed, right in enumerate(rows, start=1):
            _predicted(tmp_path, 2 * num + seed - 1, [f"peft={label}", f"seed={seed}"], right)
    report = write_report(tmp_path).read_text()
    lora, ia3 = arm_interval(np.array(LORA)), arm_interval(np.array(IA3))  # the same items for both seeds
    assert (round(lora.mean, 9), round(ia3.mean, 9)) == (round(4 / 12, 9), 0.75)
    assert 0 <= lora.low < lora.mean < lora.high <= ia3.high <= 1
    # ROUGE-L per item (1 for a right answer, 0 for "no idea") is the exact match here: the same interval,
    # from the items rather than the summaries' 0.5
    assert f"| `peft=lora` | 2 | - | {_cell(lora)} | - | - | - | {_cell(lora)} | - |" in report
    assert f"| `peft=ia3` | 2 | - | {_cell(ia3)} | - | - | - | {_cell(ia3)} | - |" in report
    assert ("n (tuned EM): `peft=lora` 2 seeds × 6 items (the same items for every seed); `peft=ia3` 2 seeds × 6 "
            "items (the same items for every seed).") in report
    assert "95% percentile bootstrap interval (B = 2000 resamples" in report
    # Wilson over 12 pooled items each, from the formula
    assert f"| `peft=lora` | 2 | 4 / 12 | 33.3% | {_wilson(4, 12)} |" in report
    assert f"| `peft=ia3` | 2 | 9 / 12 | 75.0% | {_wilson(9, 12)} |" in report
    # McNemar: b = 0, c = 5: p = 2 · (1/2)^5 = 0.0625; the paired bootstrap of ia3 - lora; k = 1: Holm = p
    diff = paired_difference(np.array(IA3), np.array(LORA))
    assert diff.mean == pytest.approx(5 / 12) and diff.low > 0 and 2 / 2001 < diff.p < 0.0625
    assert (f"| `peft=ia3` | 12 | 33.3% | 75.0% | +41.7 pp | 0 | 5 | 0.0625 | 0.0625 | {100 * diff.low:+.1f} to "
            f"{100 * diff.high:+.1f} pp | {diff.p:.4f} | {diff.p:.4f} |") in report
    assert "Correction: Holm over the k = 1 comparison(s) in this report, for each test separately." in report
    assert "n: `peft=ia3`: 12 pairs over seeds 1, 2." in report
    # the plots draw the bootstrap interval, not a symmetric one
    ax = kept["exact_match.png"].axes[0]
    ends = sorted(round(float(p[0]), 6) for c in ax.collections for seg in c.get_segments() for p in seg)
    assert ends == sorted(round(100 * v, 6) for v in (lora.low, lora.high, ia3.low, ia3.high))
    plt.close("all")


def test_seen_held_out_base_and_rouge_get_item_level_intervals(tmp_path):
    seen = [True, True, True, False, False, False]
    rights, bases = [[1, 1, 0, 1, 0, 0], [1, 0, 1, 0, 0, 1]], [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    answers = [["cold", "down", "very small", "slow", "", "x"], ["cold", "no", "small", "no", "", "dry"]]
    for seed in (0, 1):
        _predicted(tmp_path, seed, [f"seed={seed}"], rights[seed], bases[seed], seen, answers[seed])
    report = write_report(tmp_path).read_text()
    r = np.array(rights)
    seen_iv, held_iv = arm_interval(r[:, :3]), arm_interval(r[:, 3:])
    base_iv = arm_interval(np.array(bases, dtype=float))
    # ROUGE-L F1 by hand: an exact answer 1, "very small" against "small" P = 1/2, R = 1: F = 2/3, else 0
    rouge_iv = arm_interval(np.array([[1, 1, 2 / 3, 1, 0, 0], [1, 0, 1, 0, 0, 1]]))
    assert (base_iv.mean, base_iv.low) == (1 / 12, 0.0) and base_iv.high <= 2 / 6  # item 1 of seed 0, at most twice
    assert (f"| `(all jobs alike)` | 2 | - | {_cell(arm_interval(r))} | {_cell(seen_iv)} | {_cell(held_iv)} | {_cell(base_iv)} | "
            f"{_cell(rouge_iv)} | - |") in report


def test_one_seed_says_its_interval_covers_item_sampling_only(tmp_path):
    _predicted(tmp_path, 0, ["peft=lora", "seed=0"], [1, 0, 1, 0, 1, 1])
    _predicted(tmp_path, 1, ["peft=ia3", "seed=0"], [1, 1, 1, 1, 1, 1])
    report = write_report(tmp_path).read_text()
    assert ("n (tuned EM): `peft=lora` 1 seed × 6 items (one seed: the interval covers item sampling only); "
            "`peft=ia3` 1 seed × 6 items (one seed: the interval covers item sampling only).") in report
    assert f"| `peft=lora` | 1 | - | {_cell(arm_interval([[1, 0, 1, 0, 1, 1]]))} |" in report
    assert "| `peft=ia3` | 1 | - | 100.0% (100.0–100.0) |" in report  # all right: zero width, Wilson below bounds it
    assert "| `peft=ia3` | 1 | 6 / 6 | 100.0% | " + _wilson(6, 6) + " |" in report


def test_seen_and_held_out_items_need_a_seen_flag_except_items_without_a_task():
    flagged = [{"reference": "a", "tuned": "a", "task": "t", "seen": True},
               {"reference": "b", "tuned": "x", "task": "u", "seen": False},
               {"reference": "c", "tuned": "c", "task": ""}]  # no task: in neither group, needs no flag
    seen = seed_scores({"1": flagged, "2": flagged[::-1]}, "eval.tuned.seen")
    assert (seen.seeds, [s.tolist() for s in seen.scores], seen.same_items) == (["1", "2"], [[1.0], [1.0]], True)
    assert [s.tolist() for s in seed_scores({"1": flagged}, "eval.tuned.held_out").scores] == [[0.0]]
    assert [s.tolist() for s in seed_scores({"1": flagged}, "eval.tuned.all").scores] == [[1.0, 0.0, 1.0]]
    assert seed_scores({"1": flagged, "2": flagged[::-1]}, "eval.tuned.all").same_items is False  # order differs
    unflagged = [{k: v for k, v in line.items() if k != "seen"} for line in flagged]
    assert seed_scores({"1": unflagged}, "eval.tuned.seen") is None  # the report falls back to †
    assert seed_scores({"1": flagged}, "eval.base.all") is None  # no base answers


def test_the_report_shows_each_configurations_realised_mix_and_its_overlap(tmp_path):
    def mixed(seed_drawn):
        return {"by": "source", "weights": {"world": 1, "book": 3}, "cap": None, "temperature": 1.0,
                "epoch_size": 100, "groups": {"book": {"records": 20, "rate": 0.75, "per_epoch": 75,
                                                       "drawn": seed_drawn[0]},
                                              "world": {"records": 80, "rate": 0.25, "per_epoch": 25,
                                                        "drawn": seed_drawn[1]}}}

    overlap = {"method": {"ngram": 3, "threshold": 0.8},
               "validation": {"records": 10, "exact": 1, "same_prompt": 2, "near": 1, "contaminated": 3},
               "test": {"records": 20, "exact": 0, "same_prompt": 0, "near": 0, "contaminated": 0},
               "decontaminated": 0}
    for i, (seed, drawn) in enumerate([(1, (70, 30)), (2, (80, 20))]):
        _job(tmp_path, i, ["data=mixture", f"seed={seed}"], {**_ok(0.5, 1.0), "mixture": mixed(drawn), "overlap": overlap})
    tasks = {"by": None, "groups": {f"t{k:02d}": {"records": 10, "drawn": 10 + k} for k in range(20)}}
    _job(tmp_path, 2, ["data=world", "seed=1"], {**_ok(0.5, 1.0), "mixture": tasks,
                                                 "overlap": {**overlap, "decontaminated": 4}})
    # a file source splits by seed: its overlap differs between jobs, shown as a range
    for i, (seed, hits, dropped) in enumerate([(1, 2, 3), (2, 5, 6)], start=3):
        other = {**overlap, "validation": {**overlap["validation"], "contaminated": hits}, "decontaminated": dropped}
        _job(tmp_path, i, ["data=json", f"seed={seed}"], {**_ok(0.5, 1.0), "overlap": other})
    report = write_report(tmp_path).read_text()
    # mean draws over the two seeds: book 75, world 25 of 100
    assert "`data=mixture`: mixed by source, weights {'world': 1, 'book': 3}; 100 training examples drawn" in report
    assert "| `book` | 20 | 75.0% | 75 | 75.0% |" in report and "| `world` | 80 | 25.0% | 25 | 25.0% |" in report
    # 20 groups: one line; draws 10..29 of 390: min 10/390, median (19 + 20) / 2 / 390, max 29/390
    assert ("Share of draws per group: min 2.6% (`t00`), median 5.0%, max 7.4% (`t19`).") in report
    assert "| `data=mixture` | 3 / 10 (1 / 2 / 1) | 0 / 20 (0 / 0 / 0) | 0 |" in report
    assert "| `data=world` | 3 / 10 (1 / 2 / 1) | 0 / 20 (0 / 0 / 0) | 4 |" in report
    assert "| `data=json` | 2–5 / 10 over 2 jobs | 0 / 20 (0 / 0 / 0) | 3–6 |" in report
