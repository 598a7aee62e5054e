"""The throughput suite: the driver, which launches every (case, contender) run as its own process,
interleaved so drift of a shared machine hits all contenders alike, and the worker each launch runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunebench import measure, memory, workload
from tunebench.contenders import CPU_CONTENDERS, RUNNERS, unavailable
from tunebench.workload import SHARED_DATA, Case, Job


def worker(contender: str, model: str, data: str, max_length: int, warmup: int, steps: int, batch_size: int) -> None:
    """One measured run in this process; prints its ``RESULT`` line."""
    import torch

    from instructune.models.loading import count_parameters

    device = measure.device()
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    records = workload.records(data)
    net, tokenizer = workload.model_and_tokenizer(model, device)
    job = Job(net, tokenizer, records, max_length, warmup, steps, device, precision, batch_size)
    # counted first, where the fresh model lies: after Lightning's fit the model is back on the CPU
    flops = measure.flops_per_real_token(net, tokenizer, workload.job_data(job))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the peak of the training steps, not of the count above
    result = RUNNERS[contender](job)
    result.update(flops_per_token=flops, peak_rss_mb=measure.peak_rss_mb(), params=count_parameters(net)[1],
                  tokenizer_vocab=len(tokenizer), model_vocab=net.config.vocab_size,
                  attention=net.config._attn_implementation)
    if device == "cuda":
        result["peak_gpu_mb"] = measure.peak_gpu_mb()
        result["sdpa_backends"] = {k: getattr(torch.backends.cuda, f"{k}_sdp_enabled")()
                                   for k in ("flash", "mem_efficient", "cudnn", "math")}
    measure.emit(result)


def _argv(case: Case, contender: str) -> list[str]:
    return ["--worker", "--contender", contender, "--model", case.model, "--data", case.data,
            "--max-length", str(case.max_length), "--warmup", str(case.warmup), "--steps", str(case.steps),
            "--batch-size", str(case.batch_size)]


def _start(suite: str, repeats: int, out: Path, only: list[str] | None, device: str) -> dict[str, Any]:
    """A fresh results dict; with ``only``, the earlier cases of ``out`` kept (and, on the CPU, the
    higher of the two measured peaks)."""
    results: dict[str, Any] = {"suite": suite, "machine": measure.machine(), "peak": measure.peak(device),
                               "repeats": repeats, "cases": {}}
    if only and out.is_file():
        earlier = json.loads(out.read_text())
        results["cases"] = earlier["cases"]
        if "memory" in earlier:
            results["memory"] = earlier["memory"]
        before = earlier.get("peak") or {"flops": earlier.get("matmul_peak_flops")}
        if device == "cpu" and (before["flops"] or 0) > results["peak"]["flops"]:
            results["peak"] = {**results["peak"], "flops": before["flops"]}
    return results


def run_suite(cases: list[Case], repeats: int, out: Path, only: list[str] | None = None,
              contenders: list[str] = CPU_CONTENDERS, suite: str = "cpu",
              memory_case: memory.MemoryCase | None = None) -> dict[str, Any]:
    """Run the cases (``only``: those whose name contains one of these strings, merged into an
    existing results file), then ``memory_case``'s LoRA vs full comparison if given (its name is
    ``memory.NAME``), writing the results JSON after each. A contender that cannot run here is
    recorded as ``skipped: <why>`` for every repeat."""
    device = measure.device()
    results = _start(suite, repeats, out, only, device)
    for case in cases:
        if only and not any(o in case.name for o in only):
            continue
        if case.data == "instruction-data" and not SHARED_DATA.is_file():
            results["cases"][case.name] = {"skipped": f"{SHARED_DATA} is absent"}
            continue
        runs: dict[str, list] = {c: [] for c in contenders}
        for rep in range(repeats):
            for contender in contenders:  # interleaved: A B C D ..., then again
                why = unavailable(contender, device)
                r = f"skipped: {why}" if why else measure.launch(_argv(case, contender))
                runs[contender].append(r)
                shown = r if isinstance(r, str) else f"{r['tokens_per_s']:,.0f} tok/s"
                print(f"[{case.name}] repeat {rep + 1} {contender}: {shown}", flush=True)
        results["cases"][case.name] = {"model": case.model, "data": case.data, "max_length": case.max_length,
                                       "batch_size": case.batch_size, "steps": case.steps, "warmup": case.warmup,
                                       "repeats": repeats, "runs": runs}
        out.write_text(json.dumps(results, indent=1) + "\n")
    if memory_case is not None and (not only or any(o in memory.NAME for o in only)):
        results["memory"] = memory.run_memory(memory_case, repeats)
        out.write_text(json.dumps(results, indent=1) + "\n")
    return results
