"""A base model loaded in 4 bits through bitsandbytes, for QLoRA (Dettmers et al. 2023: NF4 weights, double
quantization, bf16 compute, LoRA adapters on top). bitsandbytes is an optional extra
(``pip install 'instructune[qlora]'``); every error a user can cause -- bitsandbytes missing, no CUDA device,
a model with no pretrained weights to quantize -- is one line raised before any weights are loaded.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

import torch
from torch import nn

from instructune.models.loading import ModelError

QUANTIZATIONS = ("nf4", "fp4")  # bitsandbytes' 4-bit data types (BitsAndBytesConfig.bnb_4bit_quant_type)
BITSANDBYTES_FLOOR = "0.46.1"  # transformers 5's own floor (transformers.utils.BITSANDBYTES_MIN_VERSION)


def check_quantization(quantization: str) -> None:
    """The value alone (no environment): checked when the strategy is built, on any machine."""
    if quantization not in QUANTIZATIONS:
        raise ModelError(f"peft.base_quantization={quantization!r}: must be one of {', '.join(QUANTIZATIONS)} "
                         "(bitsandbytes 4-bit) or null")


def _bitsandbytes_version() -> str | None:
    try:
        return metadata.version("bitsandbytes")
    except metadata.PackageNotFoundError:
        return None


def check_quantized_load(quantization: str, from_config: bool = False) -> None:
    """Everything a 4-bit load needs, checked before any weights are read: transformers would otherwise
    fail inside ``from_pretrained`` (an ImportError naming pip, or bitsandbytes' RuntimeError on devices)."""
    from packaging.version import Version

    check_quantization(quantization)
    setting = f"peft.base_quantization={quantization}"
    if from_config:
        raise ModelError(f"{setting} quantizes pretrained weights as they load, and model.from_config builds "
                         "random ones in memory: save that model with save_pretrained and set model.name_or_path "
                         "to its folder, or use peft=lora")
    version = _bitsandbytes_version()
    if version is None:
        raise ModelError(f"{setting} (peft=qlora) needs bitsandbytes, which is not installed: "
                         "pip install 'instructune[qlora]'")
    if Version(version) < Version(BITSANDBYTES_FLOOR):
        raise ModelError(f"{setting} (peft=qlora) needs bitsandbytes>={BITSANDBYTES_FLOOR}, found {version}: "
                         "pip install -U 'instructune[qlora]'")
    if not torch.cuda.is_available():
        raise ModelError(f"peft=qlora needs a CUDA GPU: 4-bit bitsandbytes kernels ({setting}) are supported on "
                         "CUDA only here, and torch sees no CUDA device; use peft=lora on this machine")


def quantized_load_kwargs(quantization: str, dtype: torch.dtype | None) -> dict[str, Any]:
    """``from_pretrained`` arguments for a 4-bit base: the QLoRA recipe (double quantization, bf16 compute;
    fp16 compute where ``model.dtype=float16`` asks for it, e.g. GPUs without bf16), placed whole on this
    process's GPU (``LOCAL_RANK`` under DDP: transformers' default is the current device, which every DDP
    process still has at 0 while the model loads)."""
    from transformers import BitsAndBytesConfig

    compute = torch.float16 if dtype == torch.float16 else torch.bfloat16
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantization, bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=compute)
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def is_quantized(model: nn.Module) -> bool:
    """A model transformers loaded through bitsandbytes (4-bit or 8-bit)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_kbit_training(model: nn.Module) -> nn.Module:
    """peft's preparation of a k-bit base for training: every base weight frozen, the remaining 16-bit
    weights (norms, embeddings, LM head) upcast to fp32 for stable training. Its own gradient checkpointing
    stays off: ``Strategy.enable_gradient_checkpointing`` has already switched the non-reentrant variant
    on where asked, which (unlike peft's reentrant default) needs no input-gradient hook."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
