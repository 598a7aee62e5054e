"""The figures of the sweep report (and helpers the studies' figures share), each built and returned
as a matplotlib Figure so tests read its axes back; ``save_figure`` writes and closes it.

Scores are percentages: their axis runs from 0 to at most 100 and their 95% interval bars stay within
0 and 100 (the report's bootstrap intervals do by construction; a t interval of a bounded score, which
the studies still draw, is cut at both). Labels next to points are placed where they overlap no other
label and no marker (``place_labels``); configurations too long to stand next to a point are numbered
there and named in a legend."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# (label, mean, 95% interval low, high) of a score as fractions; low and high are nan for no interval
Score = tuple[str, float, float, float]
LINESTYLES = ("-", "--", ":", "-.")  # after the 10 colours of the cycle, lines differ by style
MARKERS = ("o", "s", "^", "D")  # and points by shape


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """PNG at 120 dpi, cropped to its content (legends placed outside the axes included), then closed
    so a long sweep report does not accumulate open figures."""
    plt = pyplot()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def percent_errors(means: list[float], halves: list[float]) -> list[list[float]]:
    """Lower and upper error-bar lengths in percent points for scores given as fractions: no bar for
    a nan half-width, and neither end past 0% or 100%."""
    pairs = list(zip(means, halves, strict=True))
    lower = [0.0 if math.isnan(h) else max(0.0, min(100 * h, 100 * m)) for m, h in pairs]
    upper = [0.0 if math.isnan(h) else max(0.0, min(100 * h, 100 - 100 * m)) for m, h in pairs]
    return [lower, upper]


def interval_errors(means: list[float], lows: list[float], highs: list[float]) -> list[list[float]]:
    """Lower and upper error-bar lengths in percent points for scores and their interval ends given as
    fractions: no bar for a nan end, neither end past 0% or 100%."""
    ends = list(zip(means, lows, highs, strict=True))
    lower = [0.0 if math.isnan(lo) else 100 * max(0.0, m - max(lo, 0.0)) for m, lo, _ in ends]
    upper = [0.0 if math.isnan(hi) else 100 * max(0.0, min(hi, 1.0) - m) for m, _, hi in ends]
    return [lower, upper]


def score_axis(ax: Any, highest: float, axis: str = "y") -> None:
    """A percent axis from 0 to the next multiple of 10 above 110% of ``highest`` (percent points),
    at least 10 (all scores 0) and at most 100."""
    top = min(100.0, max(10.0, 10.0 * math.ceil(1.1 * highest / 10.0)))
    (ax.set_ylim if axis == "y" else ax.set_xlim)(0.0, top)


def _candidates(d: float, w: float, h: float) -> list[tuple[float, float]]:
    """Lower-left corners (relative to the point) of a w x h label at distance d: right, above-right,
    below-right, above, below, left, above-left, below-left."""
    e = 0.7 * d
    return [(d, -h / 2), (e, e), (e, -e - h), (-w / 2, d), (-w / 2, -d - h), (-d - w, -h / 2), (-e - w, e),
            (-e - w, -e - h)]


def place_labels(ax: Any, xy: list[tuple[float, float]], texts: list[str], fontsize: float = 7) -> list[Any]:
    """Annotate each point with its text at the nearest free spot: inside the axes, overlapping no
    other label and no marker, and off the error bars when there is room. Spots are tried on rings
    around the point (right first); a label not right beside its point gets a leader line. Call it
    once the limits and the layout are final: positions are worked out in pixels."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    ax.set_xlim(ax.get_xlim())  # freeze the limits drawn: nothing added later moves a point
    ax.set_ylim(ax.get_ylim())
    renderer = fig.canvas.get_renderer()
    pt = fig.dpi / 72.0
    pixels = [tuple(p) for p in ax.transData.transform(xy)] if xy else []
    markers = [Bbox.from_extents(x - 4 * pt, y - 4 * pt, x + 4 * pt, y + 4 * pt) for x, y in pixels]
    bars = [Bbox(ax.transData.transform(seg)).padded(2 * pt) for c in ax.collections
            if hasattr(c, "get_segments") for seg in c.get_segments() if len(seg) == 2]
    if ax.get_legend() is not None:  # a legend inside the axes is an obstacle like a marker
        markers.append(ax.get_legend().get_window_extent(renderer))
    frame, page = ax.get_window_extent().padded(-2 * pt), fig.bbox
    placed: list[Any] = []
    out = []
    for (x, y), (px, py), text in zip(xy, pixels, texts, strict=True):
        probe = ax.annotate(text, (x, y), fontsize=fontsize)
        w, h = Text.get_window_extent(probe, renderer).size + 2 * pt  # a point of air on each side
        probe.remove()
        spot = None
        for within, obstacles in ((frame, markers + bars), (frame, markers), (page, markers), (page, [])):
            spot = next((box for ring in range(2, 40) for dx, dy in _candidates(2.5 * ring * pt, w, h)
                         if _free(box := Bbox.from_bounds(px + dx, py + dy, w, h), within, placed + obstacles)), None)
            if spot is not None:
                break
        spot = spot or Bbox.from_bounds(px + 5 * pt, py - h / 2, w, h)
        placed.append(spot)
        far = math.hypot(max(spot.x0 - px, px - spot.x1, 0), max(spot.y0 - py, py - spot.y1, 0)) > 7 * pt
        out.append(ax.annotate(text, (x, y), xytext=((spot.x0 + pt - px) / pt, (spot.y0 + pt - py) / pt),
                               textcoords="offset points", ha="left", va="bottom", fontsize=fontsize,
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0,
                                           "shrinkB": 4} if far else None))
    return out


def _free(box: Any, within: Any, taken: list[Any]) -> bool:
    inside = within.x0 <= box.x0 and box.x1 <= within.x1 and within.y0 <= box.y0 and box.y1 <= within.y1
    return inside and not any(box.overlaps(other) for other in taken)


def exact_match_figure(scores: list[Score]) -> Any:
    """Horizontal bars of tuned exact match, one per configuration in table order (first on top),
    with 95% interval bars within 0 and 100; each configuration's name on one line beside its bar,
    0.3 in apart, so names of any length never touch."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 1.2 + 0.3 * len(scores)))
    means = [100 * s[1] for s in scores]
    errors = interval_errors(*([s[k] for s in scores] for k in (1, 2, 3)))
    ax.barh(range(len(scores)), means, 0.6, xerr=errors, capsize=3, color="#4c72b0")
    ax.set_yticks(range(len(scores)), [s[0] for s in scores], fontsize=7)
    ax.set_ylim(len(scores) - 0.4, -0.6)  # first configuration on top
    score_axis(ax, max((m + u for m, u in zip(means, errors[1], strict=True)), default=0.0), axis="x")
    ax.set_xlabel("tuned exact match (%)")
    ax.set_title("exact match by configuration (mean, 95% interval)")
    return fig


def cost_figure(points: list[tuple[str, float, float, float, float]]) -> Any:
    """Tuned exact match against training seconds, one point per configuration given as (label,
    seconds, EM mean, EM interval low, high): each point numbered beside it, the numbers named in a
    legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    errors = interval_errors(*([p[k] for p in points] for k in (2, 3, 4)))
    for i, (label, seconds, em, _, _) in enumerate(points):
        ax.errorbar([seconds], [100 * em], yerr=[[errors[0][i]], [errors[1][i]]], fmt=MARKERS[i // 10 % 4], capsize=3,
                    clip_on=False, label=f"{i + 1}: {label}")  # a point at 0% drawn whole, not halved
    seconds = [p[1] for p in points]
    span = (max(seconds) - min(seconds)) or max(1.0, 0.2 * max(seconds))
    ax.set_xlim(max(0.0, min(seconds) - 0.1 * span), max(seconds) + 0.1 * span)
    score_axis(ax, max((100 * p[2] + u for p, u in zip(points, errors[1], strict=True)), default=0.0))
    ax.set_xlabel("training seconds (mean over seeds)")
    ax.set_ylabel("tuned exact match (%)")
    ax.set_title("quality against cost (mean, 95% interval)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="configuration", title_fontsize=7)
    place_labels(ax, [(p[1], 100 * p[2]) for p in points], [str(i + 1) for i in range(len(points))])
    return fig


def val_loss_figure(curves: list[tuple[str, dict[int, float]]]) -> Any:
    """Validation loss against step, one line per configuration (the mean over its seeds); a
    configuration validated once is one marker, drawn large enough to see."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, (label, curve) in enumerate(curves):
        ax.plot(list(curve), list(curve.values()), marker="o", markersize=6 if len(curve) == 1 else 3,
                linestyle=LINESTYLES[i // 10 % len(LINESTYLES)], label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, not 18.25
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (response tokens)")
    ax.set_title("validation loss, mean over seeds")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
