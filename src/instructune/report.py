"""Human-readable tables for one run (printed at the end of ``python train.py``)."""

from __future__ import annotations

from typing import Any

_GROUPS = (("all", "all test"), ("seen", "seen tasks"), ("held_out", "held-out tasks"),
           ("paraphrase", "seen, reworded"))


def _pct(scores: dict[str, Any] | None, key: str) -> str:
    if not scores or key not in scores:
        return "-"
    return f"{100 * scores[key]:.1f}%"


def format_run_table(result: dict[str, Any]) -> str:
    """Exact match of the base vs the tuned model (overall, seen, held-out) and sample generations."""
    base, tuned = result["eval"]["base"], result["eval"]["tuned"]
    params = result["params"]
    lines = [
        "",
        f"trainable parameters: {params['trainable']:,} of {params['total']:,} "
        f"({100 * params['trainable_fraction']:.2f}%), {result['steps']} steps in {result['fit_seconds']:.1f}s",
    ]
    lengths = result.get("lengths") or {}
    cut, dropped = (sum((lengths.get(k) or {}).values()) for k in ("truncated", "dropped"))
    if cut or dropped:
        lines.append(f"records over max_seq_length={lengths['max_seq_length']}: {cut} truncated, {dropped} dropped "
                     f"(data.overlength={lengths['overlength']}; per split in summary.json)")
    if base or tuned:
        n = (tuned or base or {}).get("n", 0)
        lines += ["", f"exact match on the test split ({n} examples)",
                  f"| {'':<16} | {'base':>7} | {'tuned':>7} |", f"|{'-' * 18}|{'-' * 9}|{'-' * 9}|"]
        for key, label in _GROUPS:
            if (base and key in base) or (tuned and key in tuned):
                lines.append(f"| {label:<16} | {_pct(base, key):>7} | {_pct(tuned, key):>7} |")
        if tuned and "rougeL/all" in tuned:
            lines.append(f"ROUGE-L {_pct(base, 'rougeL/all')} -> {_pct(tuned, 'rougeL/all')}, "
                         f"chrF {_pct(base, 'chrf/all')} -> {_pct(tuned, 'chrf/all')} (all test examples)")
    for i, s in enumerate(result.get("samples", []), start=1):
        prompt = s["instruction"] + (f" [{s['input']}]" if s["input"] else "")
        lines += ["", f"sample {i}: {prompt}", f"  reference: {s['reference']}"]
        for who in ("base", "tuned"):
            if who in s:
                lines.append(f"  {who:<9}: {s[who]!r}")
    return "\n".join(lines) + "\n"
