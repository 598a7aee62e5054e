"""Throughput and model FLOP utilisation (MFU) of a training run, against a matmul peak measured on
the spot (a datasheet peak says little about a shared 2-core VM or a throttled laptop).

Why not Lightning's ``ThroughputMonitor``: it counts samples and padded lengths through per-step
Python callbacks (a host sync per step on a GPU) and logs windowed rates, while a research summary
needs totals of *real* and *loss-bearing* tokens. Here counts accumulate as tensors on the device
and are read once, at the end of training.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from instructune.batch import loss_token_count


@functools.lru_cache(maxsize=4)
def measure_matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 1024,
                        seconds: float = 0.5) -> float:
    """Best FLOP/s of square matmuls over ~``seconds`` (once per process and device): the ceiling a
    training step's matmuls could reach on this machine with this thread count."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def step_flops(module: L.LightningModule, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one training forward + backward of ``module`` (an ``InstructionTuningModule``: its own
    forward and token loss) on ``batch``, counted by torch's own ``FlopCounterMode`` (matmuls and
    attention, frozen weights' skipped gradients included); gradients are cleared afterwards.

    The one FLOP counter: a run's MFU (``ThroughputMeter``) and the benchmarks' FLOPs per token
    (experiments/benchmarks) both come from here, so their numbers compare."""
    was_training = module.training
    module.train()
    with FlopCounterMode(display=False) as counter:
        mean, _ = module.token_loss(module(batch), batch["labels"])
        mean.backward()
    module.zero_grad(set_to_none=True)
    module.train(was_training)
    return int(counter.get_total_flops())


class ThroughputMeter(L.Callback):
    """Counts real (non-padding) and loss-bearing training tokens and the seconds spent in training
    batches (validation excluded); ``summary()`` turns them into tokens/s and MFU."""

    def __init__(self) -> None:
        self.real = self.loss = self.positions = None
        self.seconds = 0.0
        self._started: float | None = None
        self.example_batch: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        real = batch["attention_mask"].sum()
        loss = loss_token_count(batch["labels"])
        positions = torch.tensor(batch["input_ids"].numel(), device=real.device)
        if getattr(pl_module, "architecture", "causal") == "seq2seq":  # decoder positions are work too
            real = real + loss
            positions = positions + batch["labels"].numel()
        self.real = real if self.real is None else self.real + real
        self.loss = loss if self.loss is None else self.loss + loss
        self.positions = positions if self.positions is None else self.positions + positions
        if self.example_batch is None:
            self.example_batch = {k: v.detach().clone() for k, v in batch.items()}

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def summary(self, module: L.LightningModule, count_flops: bool = True) -> dict[str, Any]:
        if self.real is None or self.seconds <= 0:
            return {}
        real, loss, positions = int(self.real), int(self.loss), int(self.positions)
        out: dict[str, Any] = {"train_seconds": round(self.seconds, 2), "real_tokens": real, "loss_tokens": loss,
                               "real_tokens_per_s": round(real / self.seconds, 1),
                               "loss_tokens_per_s": round(loss / self.seconds, 1),
                               "padding_fraction": round(1 - real / max(positions, 1), 4)}
        if self.example_batch is not None and count_flops:
            batch = {k: v.to(module.device) for k, v in self.example_batch.items()}
            seq2seq = getattr(module, "architecture", "") == "seq2seq"
            width = batch["input_ids"].numel() + (batch["labels"].numel() if seq2seq else 0)
            flops_per_position = step_flops(module, batch) / width
            device = "cuda" if module.device.type == "cuda" else "cpu"
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            peak = measure_matmul_peak(device, dtype)
            achieved = flops_per_position * real / self.seconds
            out.update(flops_per_token=round(flops_per_position), achieved_flops=round(achieved),
                       matmul_peak_flops=round(peak), mfu=round(achieved / peak, 4))
        return out
