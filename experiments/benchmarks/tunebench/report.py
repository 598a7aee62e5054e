"""The Markdown written next to the results JSON: one table per case, medians over the repeats, built
from the JSON alone so committed results regenerate the committed tables (``results/cpu.json``, written
before MFU peaks carried their source, still renders as ``results/cpu.md``)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from tunebench import targets


def median(values: list[float]) -> float:
    """Median, or NaN for no values (a contender whose every run failed)."""
    return statistics.median(values) if values else float("nan")


def ok_runs(case: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each contender's finished runs (failed and skipped ones are strings)."""
    return {c: [r for r in runs if isinstance(r, dict)] for c, runs in case["runs"].items()}


def tokens_per_s(case: dict[str, Any], contender: str) -> float:
    """A contender's median real tokens/s in ``case`` (NaN when it has no finished run)."""
    return median([r["tokens_per_s"] for r in ok_runs(case).get(contender, [])])


def best_trl(case: dict[str, Any]) -> str | None:
    """The TRL mode with the highest median tokens/s in ``case`` (None: no TRL run finished)."""
    trl = {c: tokens_per_s(case, c) for c, runs in ok_runs(case).items() if c.startswith("trl_") and runs}
    return max(trl, key=trl.get) if trl else None


def peak_of(results: dict[str, Any]) -> dict[str, Any]:
    """``{"flops", "source"}`` of the MFU denominator; results from before it had a source carry only
    ``matmul_peak_flops``, a CPU matmul measured by the suite."""
    return results.get("peak") or {"flops": results["matmul_peak_flops"], "source": "measured matmul"}


def mfu(flops_per_token: float, tps: float, peak: dict[str, Any]) -> float | None:
    """FLOPs on real tokens per second over the peak, by ``instructune.perf.model_flops_utilisation``
    (the rule a training run's MFU follows: None when the peak is unknown or the ratio exceeds 1)."""
    from instructune.perf import Peak, model_flops_utilisation

    if math.isnan(flops_per_token) or math.isnan(tps):
        return None
    return model_flops_utilisation(flops_per_token * tps, Peak(peak["flops"], peak["source"]))


def flops_per_token(case: dict[str, Any]) -> float:
    """FLOPs per real token of the case's model (every run counts the same row; older results only
    in the instructune runs)."""
    return median([r["flops_per_token"] for runs in ok_runs(case).values() for r in runs if "flops_per_token" in r])


def format_flops(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value / 1e12:.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.1f} GFLOP/s"


def _header(results: dict[str, Any]) -> str:
    if "peak" not in results:  # the committed cpu.json's format
        return (f"Measured matmul peak: {results['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; batch "
                f"{results['batch_size']}; medians of {results['repeats']} interleaved repeats.")
    peak = results["peak"]
    return (f"MFU peak: {format_flops(peak['flops'])} ({peak['source']}); medians of {results['repeats']} "
            f"interleaved repeats; MFU counts FLOPs on real tokens only.")


def _case_title(name: str, case: dict[str, Any], ok: dict[str, list[dict[str, Any]]]) -> str:
    some = next((r for runs in ok.values() for r in runs), {})
    extra = f", batch {case['batch_size']}" if "batch_size" in case else ""
    if some.get("tokenizer_vocab") and some.get("model_vocab") != some["tokenizer_vocab"]:
        extra += f", world tokenizer ({some['tokenizer_vocab']:,} ids) into a {some['model_vocab']:,}-token vocab"
    return (f"**{name}** ({some.get('params', 0) / 1e6:.2f}M parameters, full fine-tuning, max_length "
            f"{case['max_length']}{extra}, {case['steps']} timed steps after {case['warmup']} warm-up)")


def _row(contender: str, runs: list[Any], ok: list[dict[str, Any]], mark: str, ours: float, flops: float,
         peak: dict[str, Any], gpu: bool) -> str:
    if not ok:
        why = next((r for r in runs if isinstance(r, str)), "no runs").replace("|", "/")
        word = "skipped" if why.startswith("skipped") else "failed"
        blanks = ["-"] * (6 if gpu else 5)
        return f"| {contender} | {word} | {' | '.join(blanks)} | 0/{len(runs)}: {why[-160:]} |"
    spread = [r["tokens_per_s"] for r in ok]
    tps = median(spread)
    pad = median([r.get("padding_fraction", float("nan")) for r in ok])
    cells = [f"{contender}{mark}", f"{tps:,.0f}", f"{min(spread):,.0f} - {max(spread):,.0f}",
             "-" if math.isnan(ours) else f"{ours / tps:.2f}x", f"{pad:.1%}"]
    if gpu:
        memory = [r["peak_gpu_mb"] for r in ok if r.get("peak_gpu_mb") is not None]
        cells.append(f"{median(memory):,.0f}" if memory else "-")
    utilisation = mfu(flops, tps, peak)
    cells += [f"{median([r['peak_rss_mb'] for r in ok]):,.0f}", "-" if utilisation is None else f"{utilisation:.1%}",
              f"{len(ok)}/{len(runs)}"]
    return "| " + " | ".join(cells) + " |"


def table(results: dict[str, Any]) -> str:
    """Markdown: one block per case, medians over repeats; GPU results add peak GPU memory per run and
    the targets section (``tunebench.targets``)."""
    peak = peak_of(results)
    gpu = any(r.get("peak_gpu_mb") is not None for case in results["cases"].values() if "runs" in case
              for runs in ok_runs(case).values() for r in runs)
    lines = [_header(results), ""]
    for name, case in results["cases"].items():
        if "skipped" in case:
            lines += [f"**{name}**: skipped ({case['skipped']})", ""]
            continue
        ok = ok_runs(case)
        ours, best, flops = tokens_per_s(case, "instructune"), best_trl(case), flops_per_token(case)
        lines += [_case_title(name, case, ok), "",
                  "| contender | real tokens/s (median) | min - max | instructune / it | padding fraction "
                  + ("| peak GPU MB " if gpu else "") + "| peak RSS MB | MFU | runs ok |",
                  "|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "")]
        for c, runs in case["runs"].items():
            lines.append(_row(c, runs, ok[c], " (best TRL)" if c == best else "", ours, flops, peak, gpu))
        lines.append("")
    if results.get("suite") == "gpu":
        lines += targets.section(results)
    return "\n".join(lines)


def memory_line(results: dict[str, Any]) -> str:
    """The memory suite's one-line summary: median peak memory of full FT and LoRA, and their ratio
    (GPU memory where the runs had a GPU, else the process's peak RSS)."""
    key, what = ("peak_gpu_mb", "peak GPU memory") if _has_gpu(results) else ("peak_rss_mb", "peak RSS")
    full = median([r[key] for r in results["runs"]["full"] if isinstance(r, dict)])
    lora = median([r[key] for r in results["runs"]["lora"] if isinstance(r, dict)])
    return f"{what}: full {full:,.0f} MB, LoRA {lora:,.0f} MB, ratio {lora / full:.2f}"


def _has_gpu(memory: dict[str, Any]) -> bool:
    return any(isinstance(r, dict) and r.get("peak_gpu_mb") is not None for runs in memory["runs"].values()
               for r in runs)
