"""The plots of the sweep report and of the studies, read back from the figures they save: axis limits,
error-bar ends, label boxes after drawing, the points of each line. A fake sweep folder per test."""

from __future__ import annotations

import csv
import json
import math
from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from instructune import sweep_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T95_2 = 4.303  # Student t, 2 degrees of freedom: three seeds

# The masking study's 16 configurations: (label, training seconds, EM mean, EM 95% half-width), from
# experiments/masking_study/report.md: the crowded cost plot that issue 12 shows with labels overlapping.
MASKING = [(f"peft={peft} masking={masking} trainer.max_steps={steps} data.source.max_train_records={records}", s, m, h)
           for (peft, masking, steps, records), s, m, h in [
               (("full", True, 150, 300), 36.5, .298, .059), (("full", True, 150, "null"), 41.0, .385, .053),
               (("full", True, 450, 300), 93.5, .235, .042), (("full", True, 450, "null"), 87.5, .471, .034),
               (("full", False, 150, 300), 31.8, .124, .029), (("full", False, 150, "null"), 30.5, .203, .081),
               (("full", False, 450, 300), 81.1, .107, .029), (("full", False, 450, "null"), 82.0, .365, .031),
               (("lora", True, 150, 300), 30.1, .310, .122), (("lora", True, 150, "null"), 30.1, .325, .140),
               (("lora", True, 450, 300), 73.6, .365, .114), (("lora", True, 450, "null"), 76.4, .491, .039),
               (("lora", False, 150, 300), 29.5, .039, .008), (("lora", False, 150, "null"), 29.6, .028, .031),
               (("lora", False, 450, 300), 75.7, .112, .135), (("lora", False, 450, "null"), 75.0, .103, .031)]]


def _job(root: Path, num: int, overrides: list[str], em: float, seconds: float = 8.0, steps: int = 150,
         val_check_interval: int = 200, val: dict[int, float] | None = None, csv_log: bool = True) -> None:
    """A finished job as train.py leaves it: Hydra's overrides and composed config, summary.json and,
    with the CSV logger, metrics.csv (train loss every 10 steps, validation loss at ``val``'s steps)."""
    job = root / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"trainer": {"max_steps": steps, "val_check_interval": val_check_interval}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"status": "ok", "steps": steps, "eval": {"tuned": {"all": em}}, "metrics": {},
               "params": {"trainable": 100}, "wall_seconds": seconds + 2, "throughput": {"train_seconds": seconds}}
    (job / "summary.json").write_text(json.dumps(summary))
    if csv_log:
        (job / "csv" / "version_0").mkdir(parents=True)
        with (job / "csv" / "version_0" / "metrics.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train/loss", "val/loss"])
            rows = [(s, f"{2.0 - s / 1000:.3f}", "") for s in range(9, steps, 10)]
            rows += [(s, "", str(v)) for s, v in (val or {}).items()]
            writer.writerows([0, *row] for row in sorted(rows))


def _three_seeds(mean: float, half: float) -> list[float]:
    """EM of seeds 0, 1, 2 whose mean and 95% half-width are ``mean`` and ``half``."""
    sd = half * math.sqrt(3) / T95_2
    return [mean - sd, mean, mean + sd]


@pytest.fixture
def figures(monkeypatch):
    """The figures ``write_report`` saves, by file name, kept open (not written) to be read back."""
    kept: dict[str, plt.Figure] = {}

    def keep(fig, path):
        fig.canvas.draw()
        kept[path.name] = fig
        return path

    monkeypatch.setattr(sweep_report, "save_figure", keep)
    yield kept
    plt.close("all")


def _score_axis(ax) -> tuple[float, float]:
    """Limits of the exact-match axis, whichever way the bars run."""
    return ax.get_xlim() if "exact match" in ax.get_xlabel() else ax.get_ylim()


def _error_bar_ends(ax, axis: int) -> list[float]:
    """Every end of every error bar (LineCollections of errorbar / bar(yerr=)), in data units."""
    return [float(point[axis]) for c in ax.collections for seg in c.get_segments() for point in seg]


def _text_boxes(fig, texts) -> list:
    renderer = fig.canvas.get_renderer()
    return [Text.get_window_extent(t, renderer) for t in texts]  # the text alone, not its leader line


def _assert_labels_clear(ax, points: list[tuple[float, float]]) -> None:
    """The labels beside points: no two overlap, none covers a point, each inside the axes, and each
    either right beside its point (within 7 pt) or joined to it by a leader line."""
    fig = ax.figure
    fig.canvas.draw()
    boxes = _text_boxes(fig, ax.texts)
    assert len(boxes) == len(points)
    assert [(i, j) for (i, a), (j, b) in combinations(enumerate(boxes), 2) if a.overlaps(b)] == []
    pixels = ax.transData.transform(points)
    assert [(i, j) for i, box in enumerate(boxes) for j, (x, y) in enumerate(pixels) if box.contains(x, y)] == []
    frame = ax.get_window_extent()
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    for text, box, (x, y) in zip(ax.texts, boxes, pixels, strict=True):
        gap = math.hypot(max(box.x0 - x, x - box.x1, 0), max(box.y0 - y, y - box.y1, 0)) * 72 / fig.dpi
        assert gap <= 8 or text.arrow_patch is not None, (text.get_text(), gap)


def test_every_exact_match_zero_gives_a_0_to_10_percent_axis_not_a_negative_one(tmp_path, figures):
    for i, peft in enumerate(["lora", "ia3", "prompt"]):
        _job(tmp_path, i, [f"peft={peft}", "seed=0"], em=0.0)
    sweep_report.write_report(tmp_path)
    for name in ("exact_match.png", "cost.png"):
        ax = figures[name].axes[0]
        assert _score_axis(ax) == (0.0, 10.0), name
    assert [bar.get_width() for bar in figures["exact_match.png"].axes[0].patches] == [0.0, 0.0, 0.0]


def test_score_axes_and_error_bars_stay_within_0_and_100_percent(tmp_path, figures):
    # 3 seeds at 5% +- 20 and at 95% +- 20: t intervals crossing 0 and 100
    for seed, (low, high) in enumerate(zip(_three_seeds(0.05, 0.2), _three_seeds(0.95, 0.2), strict=True)):
        _job(tmp_path, 2 * seed, ["peft=lora", f"seed={seed}"], em=low, seconds=10)
        _job(tmp_path, 2 * seed + 1, ["peft=full", f"seed={seed}"], em=high, seconds=20)
    sweep_report.write_report(tmp_path)
    bars = figures["exact_match.png"].axes[0]
    assert bars.get_xlim() == (0.0, 100.0)
    assert sorted(round(v, 6) for v in _error_bar_ends(bars, axis=0)) == [0.0, 25.0, 75.0, 100.0]
    cost = figures["cost.png"].axes[0]
    assert cost.get_ylim() == (0.0, 100.0)
    assert sorted(round(v, 6) for v in _error_bar_ends(cost, axis=1)) == [0.0, 25.0, 75.0, 100.0]


def test_exact_match_names_never_overlap(tmp_path, figures):
    for i, (label, seconds, mean, half) in enumerate(MASKING):
        for seed, em in enumerate(_three_seeds(mean, half)):
            _job(tmp_path, 3 * i + seed, [*label.split(), f"seed={seed}"], em=em, seconds=seconds)
    sweep_report.write_report(tmp_path)
    fig = figures["exact_match.png"]
    ax = fig.axes[0]
    names = [t for t in ax.get_yticklabels() if t.get_text()]
    assert [t.get_text() for t in names] == [label for label, *_ in MASKING]  # first configuration on top
    assert [round(b.get_width(), 6) for b in ax.patches] == [round(100 * m, 6) for *_, m, _ in MASKING]
    boxes = _text_boxes(fig, names)
    assert [(i, j) for (i, a), (j, b) in combinations(enumerate(boxes), 2) if a.overlaps(b)] == []
    assert _score_axis(ax) == (0.0, 60.0)


def test_cost_plot_labels_of_the_masking_study_never_overlap(tmp_path, figures):
    for i, (label, seconds, mean, half) in enumerate(MASKING):
        for seed, em in enumerate(_three_seeds(mean, half)):
            _job(tmp_path, 3 * i + seed, [*label.split(), f"seed={seed}"], em=em, seconds=seconds)
    sweep_report.write_report(tmp_path)
    ax = figures["cost.png"].axes[0]
    assert ax.get_ylim() == (0.0, 60.0)  # lora masking=False 450 steps 300 records: 11.2% +- 13.5 is cut at 0
    assert min(_error_bar_ends(ax, axis=1)) == 0.0
    # each point numbered beside it, the numbers named in the legend
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(1, 17)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"{i}: {m[0]}" for i, m in enumerate(MASKING, 1)]
    _assert_labels_clear(ax, [(s, 100 * m) for _, s, m, _ in MASKING])


def test_cost_plot_labels_of_identical_points_never_overlap(tmp_path, figures):
    for i in range(8):  # eight configurations, same time, same score
        _job(tmp_path, i, [f"peft=p{i}", "seed=0"], em=0.25, seconds=30.0)
    sweep_report.write_report(tmp_path)
    ax = figures["cost.png"].axes[0]
    _assert_labels_clear(ax, [(30.0, 25.0)] * 8)


def test_a_configuration_validated_once_is_one_visible_marker(tmp_path, figures):
    # masking study settings: 150 steps, validation every 150 steps, one validation each
    for i, (peft, losses) in enumerate([("lora", (0.7, 0.9)), ("ia3", (1.2, 1.4))]):
        for seed, loss in enumerate(losses):
            _job(tmp_path, 2 * i + seed, [f"peft={peft}", f"seed={seed}"], em=0.3, val_check_interval=150,
                 val={149: loss})
    report = sweep_report.write_report(tmp_path).read_text()
    lines = figures["val_loss.png"].axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["peft=lora", "peft=ia3"]
    assert [line.get_xydata().round(6).tolist() for line in lines] == [[[149.0, 0.8]], [[149.0, 1.3]]]
    assert all(line.get_marker() == "o" and line.get_markersize() >= 6 for line in lines)
    assert "![val_loss](val_loss.png)" in report and "No validation-loss curve" not in report


def test_runs_shorter_than_the_validation_interval_are_explained_in_the_report(tmp_path, figures):
    # the default trainer validates every 200 steps: runs of 150 steps never validate, runs of 450 twice
    _job(tmp_path, 0, ["trainer.max_steps=150", "seed=0"], em=0.2, steps=150)
    _job(tmp_path, 1, ["trainer.max_steps=450", "seed=0"], em=0.3, steps=450, val={199: 1.1, 399: 0.9})
    _job(tmp_path, 2, ["trainer.max_steps=450", "seed=1"], em=0.3, steps=450, val={199: 1.3, 399: 0.7})
    report = sweep_report.write_report(tmp_path).read_text()
    lines = figures["val_loss.png"].axes[0].get_lines()
    assert [(line.get_label(), line.get_xydata().round(6).tolist()) for line in lines] == [
        ("trainer.max_steps=450", [[199.0, 1.2], [399.0, 0.8]])]
    assert ("No validation-loss curve for:\n\n- `trainer.max_steps=150`: the runs stopped at 150 steps, before the "
            "first validation (every 200 steps); set `trainer.val_check_interval` to at most `trainer.max_steps`.\n\n"
            "![exact_match]") in report


def test_a_sweep_with_no_validation_at_all_says_why_instead_of_a_plot(tmp_path, figures):
    _job(tmp_path, 0, ["peft=lora", "seed=0"], em=0.2, steps=100)
    _job(tmp_path, 1, ["peft=ia3", "seed=0"], em=0.2, steps=100, csv_log=False)
    _job(tmp_path, 2, ["peft=prompt", "seed=0"], em=0.2, steps=100)
    report = sweep_report.write_report(tmp_path).read_text()
    assert "val_loss.png" not in figures and "![val_loss]" not in report
    assert ("- `peft=lora`, `peft=prompt`: the runs stopped at 100 steps, before the first validation "
            "(every 200 steps); set `trainer.val_check_interval` to at most `trainer.max_steps`.") in report
    assert "- `peft=ia3`: no CSV log (run with `logger=csv`)." in report


def test_study_learning_curves_stay_within_0_and_100_percent(tmp_path, monkeypatch):
    """The studies' learning curves: bootstrap interval bars as given, never beyond 0..100%."""
    from instructune import study_report

    kept = {}
    monkeypatch.setattr("instructune.sweep_plots.save_figure", lambda fig, path: kept.setdefault(path.name, fig) and path)
    curve = [{"arm": "λ=0", "budget": 150, "mean": 0.0, "low": 0.0, "high": 0.0, "seeds": 5},
             {"arm": "λ=0", "budget": 300, "mean": 0.9, "low": 0.6, "high": 1.0, "seeds": 5},
             {"arm": "λ=1", "budget": 150, "mean": 0.02, "low": 0.0, "high": 0.07, "seeds": 5},
             {"arm": "λ=1", "budget": 300, "mean": 0.1, "low": 0.0, "high": 0.3, "seeds": 5}]
    study_report.learning_curves(curve, tmp_path / "learning_curves.png", "study")
    ax = kept["learning_curves.png"].axes[0]
    assert ax.get_ylim() == (0.0, 100.0) and [t.get_text() for t in ax.get_legend().get_texts()] == ["λ=0", "λ=1"]
    assert sorted(round(v, 6) for v in _error_bar_ends(ax, axis=1)) == [0.0, 0.0, 0.0, 0.0, 7.0, 30.0, 60.0, 100.0]
    plt.close("all")