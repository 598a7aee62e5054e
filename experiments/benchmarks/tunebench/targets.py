"""The issue's GPU targets, each judged from the results JSON alone (met / not met / not measured), so
the verdict in ``results/gpu.md`` is whatever the committed ``gpu.json`` says, never typed in."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

MFU_MODEL, MFU_LENGTH = "gpt2-medium", 1024  # the case whose packed + compile MFU is a target
MEMORY_MODEL = "gpt2-medium"


def _speedup(ours: str, theirs: str | None) -> Callable[[dict[str, Any]], tuple[float, str] | None]:
    """(median tokens/s of ``ours`` over that of ``theirs``, what it was compared with) for one case;
    ``theirs`` None: TRL's best mode in that case."""

    def measure(case: dict[str, Any]) -> tuple[float, str] | None:
        from tunebench.report import best_trl, tokens_per_s

        other = theirs or best_trl(case)
        if other is None:
            return None
        ratio = tokens_per_s(case, ours) / tokens_per_s(case, other)
        return None if math.isnan(ratio) else (ratio, f"{ratio:.2f}x" + ("" if theirs else f" ({other})"))

    return measure


SPEEDUPS = [  # (target, what is compared in each case, the least ratio that meets it)
    ("instructune default ≥ 2x the HF Trainer recipe", _speedup("instructune", "hf_trainer"), 2.0),
    ("instructune default ≥ 1x TRL's best mode", _speedup("instructune", None), 1.0),
    ("instructune packed ≥ 1.5x TRL's best mode", _speedup("instructune_packed", None), 1.5),
]
MFU_TARGET = ("instructune packed + compile, gpt2-medium @1024: MFU ≥ 40% of the dense bf16 peak", 0.40)
MEMORY_TARGET = ("LoRA peak GPU memory ≤ 0.6x full fine-tuning, gpt2-medium", 0.6)


def _verdict(values: list[float | None], meets: Callable[[float], bool]) -> str:
    """not met if any measured case misses; met only when every case was measured and meets it."""
    measured = [v for v in values if v is not None]
    if not measured:
        return "not measured"
    if not all(meets(v) for v in measured):
        return "not met"
    return "met" if len(measured) == len(values) else f"not measured ({len(measured)} of {len(values)} cases)"


def _speedup_row(label: str, measure: Callable, threshold: float, cases: dict[str, Any]) -> str:
    found = {name: measure(case) for name, case in cases.items()}
    text = "; ".join(f"{name}: {m[1] if m else 'not measured'}" for name, m in found.items()) or "no cases"
    verdict = _verdict([m[0] if m else None for m in found.values()], lambda v: v >= threshold)
    return f"| {label} | {text} | {verdict} |"


def _mfu_row(cases: dict[str, Any], peak: dict[str, Any]) -> str:
    from tunebench.report import flops_per_token, format_flops, mfu, tokens_per_s

    label, threshold = MFU_TARGET
    chosen = {n: c for n, c in cases.items() if c.get("model") == MFU_MODEL and c.get("max_length") == MFU_LENGTH}
    if not chosen:
        return f"| {label} | no {MFU_MODEL} @{MFU_LENGTH} case | not measured |"
    if peak["flops"] is None:
        return f"| {label} | peak unknown: {peak['source']} | not measured |"
    values = [mfu(flops_per_token(case), tokens_per_s(case, "instructune_packed_compile"), peak)
              for case in chosen.values()]
    text = "; ".join(f"{name}: {'not measured' if v is None else f'{v:.1%}'}" for name, v in zip(chosen, values))
    text += f" of {format_flops(peak['flops'])} ({peak['source']})"
    return f"| {label} | {text} | {_verdict(values, lambda v: v >= threshold)} |"


def _memory_row(memory: dict[str, Any] | None) -> str:
    from tunebench.report import median

    label, threshold = MEMORY_TARGET
    runs = (memory or {}).get("runs", {})
    full, lora = ([r["peak_gpu_mb"] for r in runs.get(s, []) if isinstance(r, dict) and r.get("peak_gpu_mb")]
                  for s in ("full", "lora"))
    model = (memory or {}).get("case", {}).get("model")
    if not full or not lora or model != MEMORY_MODEL:
        return f"| {label} | no {MEMORY_MODEL} GPU memory runs | not measured |"
    ratio = median(lora) / median(full)
    text = f"LoRA {median(lora):,.0f} MB / full {median(full):,.0f} MB = {ratio:.2f}x"
    return f"| {label} | {text} | {'met' if ratio <= threshold else 'not met'} |"


def section(results: dict[str, Any]) -> list[str]:
    """The targets table: one row per target, the per-case figures it was judged on and the verdict."""
    from tunebench.report import peak_of

    cases = {n: c for n, c in results["cases"].items() if "runs" in c}
    rows = [_speedup_row(label, measure, threshold, cases) for label, measure, threshold in SPEEDUPS]
    rows += [_mfu_row(cases, peak_of(results)), _memory_row(results.get("memory"))]
    return ["## Targets", "", "| target | measured | verdict |", "|---|---|---|", *rows, ""]
