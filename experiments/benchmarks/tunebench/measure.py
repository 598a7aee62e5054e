"""How a run is measured, the same way for every contender: a clock around the timed steps only,
real (non-padding) tokens, a device sync at the clock's edges, FLOPs per token from instructune's own
counter, a description of the machine, and one fresh process per run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENTRY = Path(__file__).resolve().parents[1] / "bench.py"
"""The script every worker process runs (with its hidden ``--worker`` flags)."""


def device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sync(device: str) -> Callable[[], None]:
    """What makes the clock see finished GPU work (nothing to wait for on a CPU)."""
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding positions of a batch, whichever stack's collator made it."""
    if "attention_mask" in batch:  # instructune's packed rows keep a mask: 0 on the row's padded tail
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())  # TRL padding-free: one flat row, every position real


class StepClock:
    """Seconds and real tokens of steps warmup+1 .. warmup+measured (batch tokens recorded in order)."""

    def __init__(self, warmup: int, measured: int) -> None:
        self.warmup, self.measured = warmup, measured
        self.batch_tokens: list[int] = []
        self.batch_positions: list[int] = []
        self.start = self.end = 0.0

    def record(self, batch: dict[str, Any]) -> None:
        self.batch_tokens.append(real_tokens(batch))
        self.batch_positions.append(int(batch["input_ids"].numel()))

    def step_done(self, step: int, sync: Callable[[], None]) -> None:
        if step == self.warmup:
            sync()
            self.start = time.perf_counter()
        elif step == self.warmup + self.measured:
            sync()
            self.end = time.perf_counter()

    def result(self) -> dict[str, float]:
        window = slice(self.warmup, self.warmup + self.measured)
        tokens, positions = sum(self.batch_tokens[window]), sum(self.batch_positions[window])
        seconds = self.end - self.start
        return {"seconds": seconds, "real_tokens": tokens, "tokens_per_s": tokens / seconds,
                "padding_fraction": 1 - tokens / max(positions, 1)}


def counting(collator: Callable[[Any], dict[str, Any]], clock: StepClock) -> Callable[[Any], dict[str, Any]]:
    """A collator that also records each batch it makes on ``clock`` (for stacks without a batch hook)."""

    def collate(features: Any) -> dict[str, Any]:
        batch = collator(features)
        clock.record(batch)
        return batch

    return collate


def flops_per_real_token(model: Any, tokenizer: Any, data: Any) -> float:
    """Forward + backward FLOPs per real token, on one unpadded instructune row of median length,
    counted by ``instructune.perf.step_flops`` (the counter behind a training run's MFU).

    The row goes to wherever the model's parameters are: the worker counts before the contender trains,
    since Lightning's teardown moves the model back to the CPU after ``fit`` (a CUDA row would then
    meet CPU weights)."""
    from instructune.data.collate import CausalCollator
    from instructune.models.module import InstructionTuningModule
    from instructune.perf import step_flops

    examples = sorted(data.examples["train"], key=lambda e: len(e.input_ids))
    batch = CausalCollator(tokenizer.pad_token_id)([examples[len(examples) // 2]])
    where = next(model.parameters()).device
    batch = {k: v.to(where) for k, v in batch.items()}  # (no window count: a plain collate)
    return step_flops(InstructionTuningModule(model, "causal"), batch) / batch["input_ids"].numel()


def matmul_peak() -> float:
    """Best of two fp32 1024^3 matmul-peak measurements on the CPU: the CPU suite's MFU denominator,
    measured because a datasheet says little about a shared VM, and twice because one run of it drifts."""
    import torch

    from instructune.perf import measure_matmul_peak

    return max(measure_matmul_peak("cpu", torch.float32, size=1024, seconds=s) for s in (1.0, 1.5))


def peak(device: str) -> dict[str, Any]:
    """The MFU denominator and where it comes from: on CUDA the datasheet's dense bf16 peak
    (``instructune.perf.device_peak``, the same figure a training run's MFU uses; ``flops`` None for
    a GPU it does not know); on the CPU the best of two fp32 matmul measurements (``matmul_peak``)."""
    import torch

    from instructune.perf import device_peak

    if device == "cuda":
        found = device_peak("cuda", torch.bfloat16)
        return {"flops": found.flops, "source": found.source}
    return {"flops": matmul_peak(), "source": "measured: best of two 1024x1024 fp32 matmul runs on cpu"}


def peak_gpu_mb() -> float | None:
    """Peak GPU memory allocated by this process's tensors so far (``torch.cuda.max_memory_allocated``),
    in MiB; None without CUDA."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def machine() -> dict[str, Any]:
    """CPU, GPU, thread count and library versions: what the numbers depend on."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"], info["cuda"] = torch.cuda.get_device_name(), torch.version.cuda
    for package in ("transformers", "lightning", "trl", "peft"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def launch(argv: list[str], timeout: int = 1200) -> dict[str, Any] | str:
    """Run one worker in a fresh process (no state shared between runs); its ``RESULT`` line, or a
    short ``failed: ...`` with the tail of its output."""
    proc = subprocess.run([sys.executable, str(ENTRY), *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return "failed: " + " | ".join(tail)[:300]


def emit(result: dict[str, Any]) -> None:
    """The worker's answer to ``launch``: one ``RESULT`` line of JSON on stdout."""
    print("RESULT " + json.dumps(result))
