"""Training throughput, side by side: instructune vs the HF Trainer tutorial recipe vs TRL's
SFTTrainer vs a bare PyTorch loop, on the same model, data, prompt, batch size, precision and steps.

    python experiments/benchmarks/bench.py                 # CPU suite (~25 min on 2 cores) -> results/cpu.json, .md
    python experiments/benchmarks/bench.py --suite gpu     # gpt2 / gpt2-medium, bf16 -> results/gpu.json, .md
    python experiments/benchmarks/bench.py --suite memory  # LoRA vs full FT -> results/memory.json (CPU: RSS)
                                                           #   or results/memory-gpu.json (GPU memory)
    python experiments/benchmarks/bench.py --report-only   # the table of results/cpu.json, nothing run

Every measurement is its own process launch, and the contenders run interleaved (A B C D, A B C D,
...) so drift of a shared machine hits all of them alike; the table quotes medians over repeats.
Only training steps are timed (after warm-up steps): no tokenisation, model loading or imports.

Tokens/s counts *real* tokens: the non-padding positions a step processes (for packed or
padding-free batches, every position is real). The same records, prompt text (Alpaca) and
response-only loss go to everyone; the HF recipe is the tutorial's (pad every example to
``max_length``; its loss covers prompt and response, which costs the same FLOPs).
MFU = (FLOPs per real token, counted by ``instructune.perf.step_flops`` on a forward+backward of an
instructune row) x real tokens/s / the peak: on a GPU the datasheet's dense bf16 peak
(``instructune.perf.device_peak``), on a CPU a matmul peak measured here before the runs.
The GPU suite's results end with the issue's targets, each judged from the JSON (``tunebench.targets``).

The harness lives in the ``tunebench`` package next to this script (one module per contender);
this file is its command line. TRL is a benchmark-only dependency (``pip install trl``), never a
runtime one of instructune.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunebench import measure, memory, report, suite
from tunebench.contenders import CPU_CONTENDERS, GPU_CONTENDERS
from tunebench.workload import CPU_CASES, GPU_CASES

HERE = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Training throughput and memory: instructune vs the HF Trainer "
                                     "recipe vs TRL's SFTTrainer vs a bare PyTorch loop.")
    parser.add_argument("--suite", choices=["cpu", "gpu", "memory"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default: results/<suite>.json; memory on a GPU: results/memory-gpu.json)")
    parser.add_argument("--case", nargs="+", default=None,
                        help=f"only the cases whose name contains one of these (merged into --out); "
                             f"'memory' for the GPU suite's {memory.NAME!r}")
    parser.add_argument("--report-only", action="store_true",
                        help="print the table (or memory summary) of the existing results JSON; run nothing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender")
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4)
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        return suite.worker(args.contender, args.model, args.data, args.max_length, args.warmup, args.steps,
                            args.batch_size)
    if args.worker_memory:
        case = memory.MemoryCase(args.model, args.data, args.max_length, args.batch_size, args.steps)
        return memory.worker(args.contender, case)
    if args.report_only:
        out = args.out or HERE / "results" / f"{args.suite}.json"
        results = json.loads(out.read_text())
        print(report.memory_line(results) if args.suite == "memory" else report.table(results))
        return None
    gpu = measure.device() == "cuda"
    if args.suite == "gpu" and not gpu:  # gpt2-medium at batch 16 x 1024 on a CPU would take days
        raise SystemExit("--suite gpu needs a CUDA device and this machine has none; run it on a GPU machine")
    if args.suite == "memory":  # a GPU's results beside, not over, the committed CPU ones
        out = args.out or HERE / "results" / ("memory-gpu.json" if gpu else "memory.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        results = memory.run_memory(memory.GPU_MEMORY if gpu else memory.CPU_MEMORY, args.repeats)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(report.memory_line(results))
        return None
    out = args.out or HERE / "results" / f"{args.suite}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.suite == "cpu":
        results = suite.run_suite(CPU_CASES, args.repeats, out, args.case, CPU_CONTENDERS, "cpu")
    else:
        results = suite.run_suite(GPU_CASES, args.repeats, out, args.case, GPU_CONTENDERS, "gpu", memory.GPU_MEMORY)
    text = report.table(results)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return None


if __name__ == "__main__":
    main()
