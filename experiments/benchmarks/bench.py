"""Training throughput, side by side: instructune vs the HF Trainer tutorial recipe vs TRL's
SFTTrainer vs a bare PyTorch loop, on the same model, data, prompt, batch size, precision and steps.

    python experiments/benchmarks/bench.py                 # CPU suite (~25 min on 2 cores)
    python experiments/benchmarks/bench.py --suite gpu     # gpt2 / gpt2-medium configs, bf16, on a GPU
    python experiments/benchmarks/bench.py --suite memory  # peak RSS: LoRA vs full FT, 124M GPT-2 from config
    python experiments/benchmarks/bench.py --report-only   # the table of results/cpu.json, nothing run

Every measurement is its own process launch, and the contenders run interleaved (A B C D, A B C D,
...) so drift of a shared machine hits all of them alike; the table quotes medians over repeats.
Only training steps are timed (after warm-up steps): no tokenisation, model loading or imports.

Tokens/s counts *real* tokens: the non-padding positions a step processes (for packed or
padding-free batches, every position is real). The same records, prompt text (Alpaca) and
response-only loss go to everyone; the HF recipe is the tutorial's (pad every example to
``max_length``; its loss covers prompt and response, which costs the same FLOPs).
MFU = (FLOPs per real token, counted by ``instructune.perf.step_flops`` on a forward+backward of an
instructune row) x real tokens/s / the matmul peak measured here before the runs.

The harness lives in the ``tunebench`` package next to this script (one module per contender);
this file is its command line. TRL is a benchmark-only dependency (``pip install trl``), never a
runtime one of instructune.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunebench import memory, report, suite
from tunebench.workload import CPU_CASES, GPU_CASES

HERE = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Training throughput and memory: instructune vs the HF Trainer "
                                     "recipe vs TRL's SFTTrainer vs a bare PyTorch loop.")
    parser.add_argument("--suite", choices=["cpu", "gpu", "memory"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: results/<suite>.json)")
    parser.add_argument("--case", nargs="+", default=None, help="only the cases whose name contains one of these")
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
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        return suite.worker(args.contender, args.model, args.data, args.max_length, args.warmup, args.steps)
    if args.worker_memory:
        return memory.worker(args.contender, args.steps)
    out = args.out or HERE / "results" / f"{args.suite}.json"
    if args.report_only:
        results = json.loads(out.read_text())
        print(report.memory_line(results) if args.suite == "memory" else report.table(results))
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.suite == "memory":
        print(report.memory_line(memory.run_memory(args.repeats, out)))
        return None
    results = suite.run_suite(CPU_CASES if args.suite == "cpu" else GPU_CASES, args.repeats, out, args.case)
    text = report.table(results)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return None


if __name__ == "__main__":
    main()
