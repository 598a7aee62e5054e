"""The benchmark harness itself (experiments/benchmarks/bench.py and its tunebench package) keeps
working: every contender that runs on a CPU measures a few real steps in its own worker process, the
tables and the GPU targets are built from results alone, and a contender that cannot run is recorded
as skipped. The GPU numbers themselves need a GPU (``bench.py --suite gpu``)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

BENCHMARKS = REPO / "experiments" / "benchmarks"
BENCH = BENCHMARKS / "bench.py"


@functools.cache
def _worker(contender: str) -> dict:
    """One worker run (cached: tests share them), world GPT-2 on world data, 1 warm-up + 3 timed steps,
    one thread (the numbers are not what is tested, and a shared machine runs other work)."""
    proc = subprocess.run([sys.executable, str(BENCH), "--worker", "--contender", contender, "--model", "world-gpt2",
                           "--data", "world", "--max-length", "128", "--warmup", "1", "--steps", "3"],
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture
def tunebench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # where bench.py finds its tunebench package
    import tunebench

    return tunebench


@pytest.mark.slow
def test_workers_measure_the_same_batches_and_the_table_compares_them(tunebench):
    ours, bare = _worker("instructune"), _worker("bare_loop")
    # the same sampler and collator: steps 2..4 of both saw exactly the same real tokens
    assert ours["real_tokens"] == bare["real_tokens"] > 0
    assert ours["padding_fraction"] == bare["padding_fraction"] and 0 < ours["padding_fraction"] < 1
    assert ours["params"] == bare["params"] == 1088256 and ours["flops_per_token"] > 6 * 1088256 * 0.9
    assert ours["tokenizer_vocab"] == ours["model_vocab"] == 2048 and "peak_gpu_mb" not in ours  # no GPU here
    from tunebench.contenders import CPU_CONTENDERS
    from tunebench.report import table

    runs = {c: [] for c in CPU_CONTENDERS}
    runs["instructune"], runs["bare_loop"] = [ours], [bare]
    results = {"suite": "cpu", "peak": {"flops": 1e11, "source": "measured: test"}, "repeats": 1,
               "cases": {"tiny": {"max_length": 128, "batch_size": 4, "steps": 3, "warmup": 1, "runs": runs}}}
    text = table(results)
    ratio = ours["tokens_per_s"] / bare["tokens_per_s"]
    b, o = f"{bare['tokens_per_s']:,.0f}", f"{ours['tokens_per_s']:,.0f}"
    assert f"| bare_loop | {b} | {b} - {b} | {ratio:.2f}x |" in text
    assert f"| instructune | {o} | {o} - {o} | 1.00x |" in text
    assert "| hf_trainer | failed | - | - | - | - | - | 0/0: no runs |" in text  # shown, not hidden
    assert "## Targets" not in text  # the targets are the GPU suite's


@pytest.mark.slow
def test_every_cpu_contender_measures_and_packing_pads_less():
    """Each stack's own batches: packed and padding-free ones pad less than dynamic padding, the HF
    recipe (every row padded to max_length) the most; all count FLOPs on the same row, before training."""
    names = ["instructune", "instructune_packed", "hf_trainer", "bare_loop"]
    if importlib.util.find_spec("trl") is not None:  # a benchmark-only dependency
        names += ["trl_dynamic", "trl_padding_free", "trl_packing"]
    got = {c: _worker(c) for c in names}
    assert all(r["real_tokens"] > 0 and r["tokens_per_s"] > 0 for r in got.values())
    assert {r["flops_per_token"] for r in got.values()} == {got["instructune"]["flops_per_token"]}
    default = got["instructune"]["padding_fraction"]
    assert got["instructune_packed"]["padding_fraction"] < default / 2
    assert got["hf_trainer"]["padding_fraction"] > 0.5 > default
    if "trl_packing" in got:
        assert got["trl_packing"]["padding_fraction"] == got["trl_padding_free"]["padding_fraction"] == 0.0
        assert 0 < got["trl_dynamic"]["padding_fraction"] < 0.5


def _run(tps: float, **extra) -> dict:
    return {"tokens_per_s": tps, "padding_fraction": 0.0, "peak_rss_mb": 900.0, "params": 354823168, **extra}


def _gpu_results(peak_flops: float | None, memory: bool) -> dict:
    """Two GPU cases, figures chosen so that each target's verdict is known by hand."""
    small = {"instructune": 3000, "instructune_packed": 6000, "instructune_packed_compile": 9000, "hf_trainer": 1000,
             "trl_dynamic": 2000, "trl_padding_free": 2500, "trl_packing": 4500, "bare_loop": 3100}
    medium = {"instructune": 100_000, "instructune_packed": 180_000, "instructune_packed_compile": 250_000,
              "hf_trainer": 40_000, "trl_dynamic": 90_000, "trl_packing": 110_000, "bare_loop": 105_000}
    cases = {}
    for name, model, length, tps, flops in (("gpt2 x d @512", "gpt2", 512, small, 1e9),
                                            ("gpt2-medium x d @1024", "gpt2-medium", 1024, medium, 2e9)):
        runs = {c: [_run(t, flops_per_token=flops, peak_gpu_mb=1000.0)] for c, t in tps.items()}
        cases[name] = {"model": model, "max_length": length, "batch_size": 16, "steps": 100, "warmup": 10,
                       "runs": runs}
    cases["gpt2-medium x d @1024"]["runs"]["trl_padding_free"] = ["failed: boom"]
    results = {"suite": "gpu", "peak": {"flops": peak_flops, "source": "datasheet: test"}, "repeats": 1,
               "cases": cases}
    if memory:
        results["memory"] = {"case": {"model": "gpt2-medium"},
                             "runs": {"full": [{"peak_gpu_mb": 8000.0}], "lora": [{"peak_gpu_mb": 4000.0}]}}
    return results


def test_the_report_judges_each_gpu_target_from_the_results(tunebench):
    from tunebench.report import table

    lines = table(_gpu_results(1e15, memory=True)).splitlines()
    assert ("| instructune default ≥ 2x the HF Trainer recipe | gpt2 x d @512: 3.00x; gpt2-medium x d @1024: "
            "2.50x | met |") in lines
    assert ("| instructune default ≥ 1x TRL's best mode | gpt2 x d @512: 0.67x (trl_packing); "
            "gpt2-medium x d @1024: 0.91x (trl_packing) | not met |") in lines
    assert ("| instructune packed ≥ 1.5x TRL's best mode | gpt2 x d @512: 1.33x (trl_packing); "
            "gpt2-medium x d @1024: 1.64x (trl_packing) | not met |") in lines
    assert ("| instructune packed + compile, gpt2-medium @1024: MFU ≥ 40% of the dense bf16 peak | "
            "gpt2-medium x d @1024: 50.0% of 1000.0 TFLOP/s (datasheet: test) | met |") in lines
    assert ("| LoRA peak GPU memory ≤ 0.6x full fine-tuning, gpt2-medium | LoRA 4,000 MB / full 8,000 MB = "
            "0.50x | met |") in lines
    # the case tables: peak GPU memory per contender, MFU = 2e9 FLOPs x 250,000 tokens/s / 1e15
    assert ("| instructune_packed_compile | 250,000 | 250,000 - 250,000 | 0.40x | 0.0% | 1,000 | 900 | 50.0% "
            "| 1/1 |") in lines
    assert "| trl_padding_free | failed | - | - | - | - | - | - | 0/1: failed: boom |" in lines
    assert ("| trl_packing (best TRL) | 110,000 | 110,000 - 110,000 | 0.91x | 0.0% | 1,000 | 900 | 22.0% "
            "| 1/1 |") in lines


def test_targets_without_a_peak_or_memory_runs_are_not_measured(tunebench):
    from tunebench.report import table

    lines = table(_gpu_results(None, memory=False)).splitlines()
    assert ("| instructune packed + compile, gpt2-medium @1024: MFU ≥ 40% of the dense bf16 peak | "
            "peak unknown: datasheet: test | not measured |") in lines
    assert ("| LoRA peak GPU memory ≤ 0.6x full fine-tuning, gpt2-medium | no gpt2-medium GPU memory runs "
            "| not measured |") in lines
    assert "| instructune | 3,000 | 3,000 - 3,000 | 1.00x | 0.0% | 1,000 | 900 | - | 1/1 |" in lines  # MFU unknown


def test_the_committed_cpu_results_still_render_as_committed(tunebench):
    from tunebench.report import table

    results = json.loads((BENCHMARKS / "results" / "cpu.json").read_text())
    assert table(results) + "\n" == (BENCHMARKS / "results" / "cpu.md").read_text()


def test_the_suite_records_a_contender_that_cannot_run_as_skipped(tunebench, monkeypatch, tmp_path):
    from tunebench import contenders, measure, suite
    from tunebench.report import table
    from tunebench.workload import Case

    def no_launch(argv):
        raise AssertionError(f"launched {argv}")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(measure, "launch", no_launch)
    monkeypatch.setattr(measure, "peak", lambda device: {"flops": 1e11, "source": "measured: test"})
    monkeypatch.setattr(contenders.importlib.util, "find_spec", lambda name: None if name == "trl" else
                        real_find_spec(name))
    out = tmp_path / "gpu.json"
    results = suite.run_suite([Case("tiny", "world-gpt2", "world", 256, 1, 2)], 2, out,
                              contenders=["instructune_packed_compile", "trl_packing"], suite="gpu")
    no_cuda = "skipped: no CUDA device (torch.compile is measured on the GPU suite only)"
    no_trl = "skipped: TRL is not installed (pip install -e '.[bench]')"
    assert results["cases"]["tiny"]["runs"] == {"instructune_packed_compile": [no_cuda] * 2,
                                                "trl_packing": [no_trl] * 2}
    assert json.loads(out.read_text()) == results
    assert f"| trl_packing | skipped | - | - | - | - | - | 0/2: {no_trl} |" in table(results).splitlines()
