"""The Markdown written next to the results JSON: one table per case, medians over the repeats, built
from the JSON alone so committed results regenerate the committed tables."""

from __future__ import annotations

import statistics
from typing import Any


def median(values: list[float]) -> float:
    """Median, or NaN for no values (a contender whose every run failed)."""
    return statistics.median(values) if values else float("nan")


def table(results: dict[str, Any]) -> str:
    """Markdown: one block per case, medians over repeats."""
    peak = results["matmul_peak_flops"]
    lines = [f"Measured matmul peak: {peak / 1e9:.1f} GFLOP/s; batch {results['batch_size']}; "
             f"medians of {results['repeats']} interleaved repeats.", ""]
    for name, case in results["cases"].items():
        if "skipped" in case:
            lines += [f"**{name}**: skipped ({case['skipped']})", ""]
            continue
        ok = {c: [r for r in runs if isinstance(r, dict)] for c, runs in case["runs"].items()}
        flops = median([r["flops_per_token"] for r in ok["instructune"] if "flops_per_token" in r])
        ours = median([r["tokens_per_s"] for r in ok["instructune"]])
        trl = {c: median([r["tokens_per_s"] for r in ok[c]]) for c in ok if c.startswith("trl_") and ok[c]}
        best_trl = max(trl, key=trl.get) if trl else None
        params = next((r["params"] for r in ok["instructune"]), 0)
        lines += [f"**{name}** ({params / 1e6:.2f}M parameters, full fine-tuning, max_length {case['max_length']}, "
                  f"{case['steps']} timed steps after {case['warmup']} warm-up)", "",
                  "| contender | real tokens/s (median) | min - max | instructune / it | padding fraction "
                  "| peak RSS MB | MFU | runs ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for c, runs in ok.items():
            if not runs:
                failed = next((r for r in case["runs"][c] if isinstance(r, str)), "no runs").replace("|", "/")
                lines.append(f"| {c} | failed | - | - | - | - | - | 0/{len(case['runs'][c])}: {failed[-160:]} |")
                continue
            tps = median([r["tokens_per_s"] for r in runs])
            pad = median([r.get("padding_fraction", float("nan")) for r in runs])
            rss = median([r["peak_rss_mb"] for r in runs])
            mark = " (best TRL)" if c == best_trl else ""
            spread = [r["tokens_per_s"] for r in runs]
            lines.append(f"| {c}{mark} | {tps:,.0f} | {min(spread):,.0f} - {max(spread):,.0f} | {ours / tps:.2f}x | "
                         f"{pad:.1%} | {rss:,.0f} | "
                         f"{flops * tps / peak:.1%} | {len(runs)}/{len(case['runs'][c])} |")
        lines.append("")
    return "\n".join(lines)


def memory_line(results: dict[str, Any]) -> str:
    """The memory suite's one-line summary: median peak RSS of full FT and LoRA, and their ratio."""
    full = median([r["peak_rss_mb"] for r in results["runs"]["full"] if isinstance(r, dict)])
    lora = median([r["peak_rss_mb"] for r in results["runs"]["lora"] if isinstance(r, dict)])
    return f"peak RSS: full {full:,.0f} MB, LoRA {lora:,.0f} MB, ratio {lora / full:.2f}"
