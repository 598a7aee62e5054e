"""GPU step-time choices made before training: attention kernels, padded shapes, the last batch.

Why these exist (measured on one H100, torch 2.11 + CUDA 13, gpt2 124M, bf16, batch 4, length <= 512):
with SDPA on Hopper, torch >= 2.10 prefers the cuDNN attention backend for masked calls, and cuDNN
builds an execution plan for every exact shape (pytorch/pytorch#162073, huggingface/transformers#48163).
Dynamic padding gives a new sequence length almost every step, so each step paid ~150 ms of planning: a
fixed length stepped in 29 ms, varying lengths in 189 ms, lengths rounded up to a multiple of 64 in 40 ms.
So on CUDA: cuDNN SDPA is switched off (flash / memory-efficient kernels have no per-shape plan), padded
lengths are rounded to a multiple of 64 (a handful of shapes for the allocator and torch.compile), and the
training loader's last partial batch is dropped (one odd batch shape per epoch otherwise). On the CPU
none of this pays, and nothing changes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch

from instructune.config_check import ConfigError

log = logging.getLogger(__name__)

CUDA_PAD_MULTIPLE = 64  # tensor-core friendly, and few enough distinct lengths (<= 16 up to 1024)


def runs_on_cuda(accelerator: str, cuda_available: bool | None = None) -> bool:
    """Whether a Trainer with this ``accelerator`` will train on CUDA devices (``auto`` picks CUDA when
    there is one, as Lightning does)."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and available)


@dataclass(frozen=True)
class ShapeChoices:
    """The batch shapes a run trains with; ``None`` in the config means "what suits the device"."""

    pad_to_multiple_of: int | None
    drop_last: bool


def shape_choices(on_cuda: bool, pad_to_multiple_of: int | None, drop_last: bool | None) -> ShapeChoices:
    """``data.pad_to_multiple_of`` null: 64 on CUDA, none on the CPU (1 also means none);
    ``data.drop_last`` null: drop the training loader's last partial batch on CUDA only."""
    multiple = pad_to_multiple_of if pad_to_multiple_of is not None else (CUDA_PAD_MULTIPLE if on_cuda else None)
    if multiple is not None and multiple < 1:
        raise ConfigError(f"data.pad_to_multiple_of must be >= 1 (1: no rounding) or null, got {multiple}")
    return ShapeChoices(None if multiple == 1 else multiple, on_cuda if drop_last is None else bool(drop_last))


def configure_attention(on_cuda: bool) -> dict[str, bool]:
    """Switch cuDNN SDPA off on CUDA (see the module docstring); returns which SDPA backends are enabled,
    for the run summary. Process-wide, like every ``torch.backends`` switch."""
    if on_cuda and torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN scaled-dot-product attention off: it plans per exact shape (see instructune.speed)")
    return {"flash": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled()}


def compile_options(setting: Any) -> dict[str, Any] | None:
    """``trainer.compile``: false/null (off), true (torch.compile's defaults) or a mapping of
    ``torch.compile`` keyword arguments (e.g. ``{mode: max-autotune}``, ``{backend: aot_eager}``)."""
    if setting is None or setting is False:
        return None
    if setting is True:
        return {}
    if isinstance(setting, dict):
        return dict(setting)
    raise ConfigError(f"trainer.compile must be true, false or a mapping of torch.compile arguments, got {setting!r}")


def kernel_report(model: torch.nn.Module, on_cuda: bool, sdpa: dict[str, bool], shapes: ShapeChoices,
                  compile_with: dict[str, Any] | None) -> dict[str, Any]:
    """What summary.json records under ``kernels``: the attention implementation the model runs
    (transformers' ``_attn_implementation``: sdpa, eager, flash_attention_2 ...) and the choices above."""
    config = getattr(model, "config", None)
    attention = getattr(config, "_attn_implementation", None) or "unknown"
    report = {"device": "cuda" if on_cuda else "cpu", "attention": attention,
              "sdpa_backends": sdpa if on_cuda else None, **asdict(shapes),
              "compile": compile_with}
    log.info("kernels: attention=%s%s, pad_to_multiple_of=%s, drop_last=%s, compile=%s", attention,
             f" (SDPA backends on: {', '.join(k for k, v in sdpa.items() if v)})" if on_cuda else "",
             shapes.pad_to_multiple_of, shapes.drop_last, compile_with)
    return report


__all__ = ["CUDA_PAD_MULTIPLE", "runs_on_cuda", "ShapeChoices", "shape_choices", "configure_attention",
           "compile_options", "kernel_report"]
