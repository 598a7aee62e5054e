"""The throughput suite: the driver, which launches every (case, contender) run as its own process,
interleaved so drift of a shared machine hits all contenders alike, and the worker each launch runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunebench import measure, workload
from tunebench.contenders import CONTENDERS, RUNNERS
from tunebench.workload import BATCH_SIZE, SHARED_DATA, Case, Job


def worker(contender: str, model: str, data: str, max_length: int, warmup: int, steps: int) -> None:
    """One measured run in this process; prints its ``RESULT`` line."""
    from instructune.models.loading import count_parameters

    device = measure.device()
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    records = workload.records(data)
    net, tokenizer = workload.model_and_tokenizer(model, device)
    result = RUNNERS[contender](Job(net, tokenizer, records, max_length, warmup, steps, device, precision))
    result["peak_rss_mb"] = measure.peak_rss_mb()
    result["params"] = count_parameters(net)[1]
    measure.emit(result)


def run_suite(cases: list[Case], repeats: int, out: Path, only: list[str] | None = None) -> dict[str, Any]:
    """Run the cases (``only``: those whose name contains one of these strings, merged into an
    existing results file) and write the results JSON after each case."""
    peak = measure.matmul_peak(measure.device())
    results: dict[str, Any] = {"machine": measure.machine(), "matmul_peak_flops": peak, "batch_size": BATCH_SIZE,
                               "repeats": repeats, "cases": {}}
    if only and out.is_file():
        earlier = json.loads(out.read_text())
        results["cases"] = earlier["cases"]
        results["matmul_peak_flops"] = max(peak, earlier["matmul_peak_flops"])
    for case in cases:
        if only and not any(o in case.name for o in only):
            continue
        if case.data == "instruction-data" and not SHARED_DATA.is_file():
            results["cases"][case.name] = {"skipped": f"{SHARED_DATA} is absent"}
            continue
        runs: dict[str, list] = {c: [] for c in CONTENDERS}
        for rep in range(repeats):
            for contender in CONTENDERS:  # interleaved: A B C D ..., then again
                r = measure.launch(["--worker", "--contender", contender, "--model", case.model, "--data", case.data,
                                    "--max-length", str(case.max_length), "--warmup", str(case.warmup),
                                    "--steps", str(case.steps)])
                runs[contender].append(r)
                print(f"[{case.name}] repeat {rep + 1} {contender}: "
                      f"{r if isinstance(r, str) else round(r['tokens_per_s'])} tok/s", flush=True)
        results["cases"][case.name] = {"model": case.model, "data": case.data, "max_length": case.max_length,
                                       "steps": case.steps, "warmup": case.warmup, "runs": runs}
        out.write_text(json.dumps(results, indent=1) + "\n")
    return results
