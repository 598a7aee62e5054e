"""The benchmark harness itself (experiments/benchmarks/bench.py and its tunebench package) keeps
working: its instructune and bare-loop workers run a few real steps and the table is built from their
results. TRL is a benchmark-only dependency, so its contenders are not exercised here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

BENCHMARKS = REPO / "experiments" / "benchmarks"
BENCH = BENCHMARKS / "bench.py"


def _worker(contender: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH), "--worker", "--contender", contender, "--model", "world-gpt2",
                           "--data", "world", "--max-length", "256", "--warmup", "2", "--steps", "4"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow
def test_workers_measure_the_same_batches_and_the_table_compares_them(monkeypatch):
    ours, bare = _worker("instructune"), _worker("bare_loop")
    # the same sampler and collator: steps 3..6 of both saw exactly the same real tokens
    assert ours["real_tokens"] == bare["real_tokens"] > 0
    assert ours["padding_fraction"] == bare["padding_fraction"] and 0 < ours["padding_fraction"] < 1
    assert ours["params"] == bare["params"] == 1088256 and ours["flops_per_token"] > 6 * 1088256 * 0.9
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # where bench.py finds its tunebench package
    from tunebench.contenders import CONTENDERS
    from tunebench.report import table

    runs = {c: [] for c in CONTENDERS}
    runs["instructune"], runs["bare_loop"] = [ours], [bare]
    results = {"matmul_peak_flops": 1e11, "batch_size": 4, "repeats": 1,
               "cases": {"tiny": {"max_length": 256, "steps": 4, "warmup": 2, "runs": runs}}}
    text = table(results)
    ratio = ours["tokens_per_s"] / bare["tokens_per_s"]
    b, o = f"{bare['tokens_per_s']:,.0f}", f"{ours['tokens_per_s']:,.0f}"
    assert f"| bare_loop | {b} | {b} - {b} | {ratio:.2f}x |" in text
    assert f"| instructune | {o} | {o} - {o} | 1.00x |" in text
    assert "| hf_trainer | failed |" in text  # contenders that did not run are shown, not hidden
