"""Throughput and model FLOP utilisation (MFU) of a training run.

The MFU denominator depends on the device:

- CUDA: the datasheet's dense peak for the dtype the matmuls run in (Lightning's
  ``get_available_flops`` table, plus a short table of ours for GPUs it lacks or misreads). A matmul
  measured on the spot is no GPU's peak: a 1024x1024 matmul reaches a fraction of it, and after
  ``fit`` Lightning moves the module back to the CPU, so the old "measure where the module is" divided
  a GPU run's FLOP/s by the CPU's (MFU 151% on an H100).
- CPU: the best FLOP/s of matmuls measured on the spot, since a CPU datasheet says little about a
  shared 2-core VM, its thread count or a throttled laptop.

The numerator counts FLOPs on real (non-padding) tokens only. An MFU above 100% means the peak is
wrong, so it is reported as unknown rather than as a number.

Why not Lightning's ``ThroughputMonitor``: it counts samples and padded lengths through per-step
Python callbacks (a host sync per step on a GPU) and logs windowed rates, while a research summary
needs totals of *real* and *loss-bearing* tokens. Here counts accumulate as tensors on the device
and are read once, at the end of training.
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from torch.utils.flop_counter import FlopCounterMode

from instructune.batch import loss_token_count

MATMUL_SIZE = 1024  # side of the square matmuls that measure a CPU's peak


@dataclass(frozen=True)
class Peak:
    """A device's dense matmul FLOP/s in one dtype (``None``: unknown) and where the number comes from."""

    flops: float | None
    source: str


# Dense (no 2:4 sparsity) per-GPU peaks for names that Lightning 2.6's ``get_available_flops`` does not
# know or misreads; checked before it, first match wins. Lightning parses "NVIDIA H200" and
# "NVIDIA GH200 480GB" to no entry (its H200 figures, keyed "h200 sxm1", are the with-sparsity ones),
# its "h100 nvl" figures are for a pair of cards, and it parses "NVIDIA L40" / "NVIDIA L40S" as the L4.
# Keys are Lightning's: torch dtypes and "tfloat32" (fp32 matmuls on tensor cores).
_OWN_DATASHEET: tuple[tuple[str, dict[torch.dtype | str, float]], ...] = (
    # H100 NVL and H200 NVL datasheets: FP64 30, FP32 60 TFLOPS; TF32 835, BF16/FP16 1,671 TFLOPS with sparsity
    (r"\bh[12]00 nvl\b", {torch.float64: 30e12, torch.float32: 60e12, "tfloat32": 417.5e12,
                          torch.bfloat16: 835.5e12, torch.float16: 835.5e12}),
    # H200 SXM datasheet (https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446) and
    # GH200 datasheet: BF16/FP16 1,979, TF32 989 TFLOPS with sparsity; the GH100 die at H100 SXM clocks, so
    # Lightning's "h100 sxm" figures
    (r"\bg?h200\b", {torch.float64: 33.5e12, torch.float32: 66.9e12, "tfloat32": 494.7e12,
                     torch.bfloat16: 989.4e12, torch.float16: 989.4e12}),
    # L40S datasheet: FP32 91.6 TFLOPS; TF32 366, BF16/FP16 733 TFLOPS with sparsity
    (r"\bl40s\b", {torch.float32: 91.6e12, "tfloat32": 183e12, torch.bfloat16: 362.05e12, torch.float16: 362.05e12}),
    # L40 datasheet: FP32 90.5 TFLOPS; TF32 181, BF16/FP16 362.1 TFLOPS with sparsity (Lightning's "l40" entry)
    (r"\bl40\b", {torch.float32: 90.5e12, "tfloat32": 90.5e12, torch.bfloat16: 181.05e12, torch.float16: 181.05e12}),
    # HGX B200 datasheet (https://nvdam.widen.net/s/wwnsxrhm2w/blackwell-datasheet-3384703): FP16/BF16 4.5 PFLOPS
    # with sparsity per GPU. Not GB200 (higher clocks), which stays unknown.
    (r"\bb200\b", {torch.bfloat16: 2.25e15, torch.float16: 2.25e15}),
)

_LABELS: dict[torch.dtype | str, str] = {torch.float64: "fp64", torch.float32: "fp32", "tfloat32": "tf32",
                                         torch.bfloat16: "bf16", torch.float16: "fp16"}


def _label(key: torch.dtype | str) -> str:
    return _LABELS.get(key, str(key).removeprefix("torch."))


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype a Lightning precision name ("bf16-mixed", "16-true", "32-true", ...) runs matmuls in.
    (Lightning's own mapping, ``_plugin_to_compute_dtype``, is private.)"""
    return {"bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}.get(str(precision).split("-")[0],
                                                                                torch.float32)


def _matmul_key(device: torch.device, dtype: torch.dtype) -> torch.dtype | str:
    """The table key for ``dtype``: fp32 matmuls run as TF32 on Ampere and later unless the float32 matmul
    precision is "highest" (Lightning's rule; ``allow_tf32 = True`` sets it to "high")."""
    if (dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest"
            and torch.cuda.get_device_capability(device)[0] >= 8):
        return "tfloat32"
    return dtype


def datasheet_peak(device: torch.device, dtype: torch.dtype) -> Peak:
    """The datasheet's dense peak of the CUDA ``device`` (named by ``torch.cuda.get_device_name``)."""
    name = torch.cuda.get_device_name(device)
    key = _matmul_key(device, dtype)
    for pattern, table in _OWN_DATASHEET:
        if re.search(pattern, name.lower()):
            if key in table:
                return Peak(table[key], f"datasheet: {name}, {_label(key)} (instructune's table)")
            return Peak(None, f"unknown: no {_label(key)} figure for {name!r} in instructune's table")
    with warnings.catch_warnings(record=True) as caught:  # its warning becomes the reason in ``source``
        warnings.simplefilter("always")
        flops = get_available_flops(device, key)
    if flops is None:
        why = str(caught[-1].message) if caught else f"{name!r} is not in Lightning's table"
        return Peak(None, f"unknown: {why}")
    return Peak(float(flops), f"datasheet: {name}, {_label(key)} (Lightning's table)")


def device_peak(device: str | torch.device, dtype: torch.dtype) -> Peak:
    """The MFU denominator: the datasheet peak on CUDA, a measured matmul peak on the CPU (module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return datasheet_peak(device, dtype)
    if device.type == "cpu":
        return Peak(measure_matmul_peak("cpu", dtype, MATMUL_SIZE),
                    f"measured: {MATMUL_SIZE}x{MATMUL_SIZE} {_label(dtype)} matmul on cpu")
    return Peak(None, f"unknown: no datasheet table or measurement for {device.type} devices")


def model_flops_utilisation(achieved_flops: float, peak: Peak) -> float | None:
    """achieved / peak, or None when the peak is unknown or the ratio would exceed 1 (the peak is then wrong)."""
    if peak.flops is None or peak.flops <= 0:
        return None
    ratio = achieved_flops / peak.flops
    return ratio if ratio <= 1 else None


@functools.lru_cache(maxsize=4)
def measure_matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = MATMUL_SIZE,
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
    (experiments/benchmarks) both come from here, so their numbers compare. A ``trainer.compile`` run is
    counted on its plain model (``module.eager()``): a compiled graph hides its matmuls from the counter."""
    from contextlib import nullcontext

    was_training = module.training
    module.train()
    eager = module.eager() if hasattr(module, "eager") else nullcontext()
    with eager, FlopCounterMode(display=False) as counter:
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
        self.device: torch.device | None = None  # the training device, for the peak
        self.dtype = torch.float32  # the matmul dtype of the trainer's precision

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # recorded now: after fit, Lightning's teardown moves the module back to the CPU
        self.device = trainer.strategy.root_device
        self.dtype = compute_dtype(trainer.precision)
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
            self.example_batch = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

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
            # the batch goes where the parameters are now (the CPU after fit, while the batch was on the GPU)
            here = next(module.parameters(), torch.empty(0, device=module.device)).device
            batch = {k: v.to(here) if isinstance(v, torch.Tensor) else v for k, v in self.example_batch.items()}
            seq2seq = getattr(module, "architecture", "") == "seq2seq"
            width = batch["input_ids"].numel() + (batch["labels"].numel() if seq2seq else 0)
            flops_per_position = step_flops(module, batch) / width
            achieved = flops_per_position * real / self.seconds  # FLOPs of real tokens only
            peak = device_peak(self.device or here, self.dtype)
            mfu = model_flops_utilisation(achieved, peak)
            if mfu is None and peak.flops is not None:
                peak = Peak(None, f"unknown: achieved {achieved:.4g} FLOP/s exceeds the {peak.flops:.4g} of "
                                  f"'{peak.source}'")
            out.update(flops_per_token=round(flops_per_position), achieved_flops=round(achieved),
                       peak_flops=None if peak.flops is None else round(peak.flops), peak_source=peak.source,
                       mfu=None if mfu is None else round(mfu, 4))
        return out
