"""Load a Hugging Face model by hub name or local folder, or build one from a config dict."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

ARCHITECTURES = ("causal", "seq2seq")
# A hub name: "name" or "namespace/name" (huggingface_hub's own rule, less its length limits).
_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")
_LOCAL_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class ModelError(ValueError):
    """A model that cannot be loaded or prepared as asked; the message says what to change."""


def _auto_class(architecture: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if architecture not in ARCHITECTURES:
        raise ModelError(f"model.architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    return AutoModelForCausalLM if architecture == "causal" else AutoModelForSeq2SeqLM


def load_model(
    name_or_path: str | None = None,
    architecture: str = "causal",
    from_config: dict[str, Any] | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    quantization: str | None = None,
) -> nn.Module:
    """Pretrained weights (``name_or_path``) or fresh random weights (``from_config``, with ``model_type``).

    ``trust_remote_code`` stays off unless a config turns it on; weights load from safetensors
    where the folder has them. ``quantization`` (``Strategy.base_quantization``: ``nf4`` for QLoRA) loads
    the linear layers in 4 bits through bitsandbytes, on the GPU; what it needs is checked first.
    """
    auto = _auto_class(architecture)
    torch_dtype = getattr(torch, dtype) if dtype else None
    if quantization is not None:
        # imported here: quantization.py imports ModelError from this module
        from instructune.models.quantization import check_quantized_load

        check_quantized_load(quantization, from_config=from_config is not None)
    if from_config is not None:
        from transformers import AutoConfig

        params = dict(from_config)
        model_type = params.pop("model_type", None)
        if model_type is None:
            raise ModelError("model.from_config needs a 'model_type' (e.g. gpt2, llama, t5)")
        config = AutoConfig.for_model(model_type, **params)
        _check_architecture(config, architecture, f"from_config model_type={model_type}")
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
        return model.to(torch_dtype) if torch_dtype else model
    if not name_or_path:
        raise ModelError("set model.name_or_path (hub name or local folder) or model.from_config")
    local = local_model_dir(name_or_path)
    if local is not None:
        if not any((local / f).is_file() for f in _WEIGHT_FILES):
            raise ModelError(f"{name_or_path}: the folder has config.json but no weights ({', '.join(_WEIGHT_FILES[::2])})")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(local) if local is not None else name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{name_or_path}: could not load the model config: {str(e).splitlines()[0]}") from None
    _check_architecture(config, architecture, name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "use_safetensors": None}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if quantization is not None:
        from instructune.models.quantization import quantized_load_kwargs

        kwargs.update(quantized_load_kwargs(quantization, torch_dtype))
    try:
        return auto.from_pretrained(str(local) if local is not None else name_or_path, config=config, **kwargs)
    except OSError as e:
        raise ModelError(f"{name_or_path}: could not load the weights: {str(e).splitlines()[0]}") from None


def local_model_dir(name_or_path: str, kind: str = "model") -> Path | None:
    """The local folder ``name_or_path`` names, or None for a hub name (``gpt2``, ``org/model``).

    A path that is local (it exists, starts with ``./``, ``../``, ``/`` or ``~``, or is no hub name)
    must be a folder, and a model folder must hold config.json; otherwise ``ModelError`` says so,
    instead of the hub's "Repo id must be ..." or a missing-file error from inside transformers.
    ``kind="tokenizer"`` checks a tokenizer folder (model.tokenizer; no config.json needed).
    """
    local = Path(name_or_path).expanduser()
    key, holds = (("model.name_or_path", "config.json and the weights") if kind == "model"
                  else ("model.tokenizer", "the tokenizer files"))
    if not local.exists():
        if not name_or_path.startswith(_LOCAL_PREFIXES) and _HUB_NAME.fullmatch(name_or_path):
            return None
        absolute = str(local.resolve())
        looked = f" ({absolute} does not exist)" if absolute != name_or_path else ""
        raise ModelError(f"{name_or_path}: no such {kind} folder{looked}; set {key} to an existing folder "
                         f"that holds {holds}, or to a hub name such as gpt2 or org/model")
    if not local.is_dir():
        raise ModelError(f"{name_or_path}: is a file, not a {kind} folder; set {key} to the folder that holds {holds}")
    if kind == "model" and not (local / "config.json").is_file():
        inside = sorted(p.parent.name for p in local.glob("*/config.json"))
        hint = (f"; {os.path.join(name_or_path, inside[0])} has one: set {key} to that folder" if len(inside) == 1
                else f"; set {key} to the folder that save_pretrained wrote ({holds})")
        raise ModelError(f"{name_or_path}: no config.json in this folder, so it is not a Hugging Face model folder{hint}")
    return local


def _check_architecture(config: Any, architecture: str, where: str) -> None:
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    if is_seq2seq != (architecture == "seq2seq"):
        want = "seq2seq" if is_seq2seq else "causal"
        raise ModelError(f"{where}: a {config.model_type} model is {want}, but model.architecture={architecture}")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, shared (tied) weights once: peft's own count for peft
    models (it also knows 4-bit weights and virtual-token encoders), transformers' for plain models."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    if hasattr(model, "num_parameters"):
        return model.num_parameters(only_trainable=True), model.num_parameters()
    params = list(model.parameters())  # nn.Module.parameters() already yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass, non-reentrant: the reentrant variant drops the
    gradients of frozen-base PEFT models (their inputs do not require grad) and breaks under DDP.
    Whether a strategy allows it is the strategy's to say (``Strategy.enable_gradient_checkpointing``)."""
    if not getattr(model, "supports_gradient_checkpointing", True) and not hasattr(model, "base_model"):
        raise ModelError(f"a {getattr(model.config, 'model_type', '?')} model does not support gradient checkpointing")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24 (the old name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
