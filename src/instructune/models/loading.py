"""Load a Hugging Face model by hub name or local folder, or build one from a config dict."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

ARCHITECTURES = ("causal", "seq2seq")
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
) -> nn.Module:
    """Pretrained weights (``name_or_path``) or fresh random weights (``from_config``, with ``model_type``).

    ``trust_remote_code`` stays off unless a config turns it on; weights load from safetensors
    where the folder has them.
    """
    auto = _auto_class(architecture)
    torch_dtype = getattr(torch, dtype) if dtype else None
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
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"{name_or_path}: no config.json; not a Hugging Face model folder")
        if not any((local / f).is_file() for f in _WEIGHT_FILES):
            raise ModelError(f"{name_or_path}: the folder has config.json but no weights ({', '.join(_WEIGHT_FILES[::2])})")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(local) if local.is_dir() else name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{name_or_path}: could not load the model config: {str(e).splitlines()[0]}") from None
    _check_architecture(config, architecture, name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "use_safetensors": None}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        return auto.from_pretrained(str(local) if local.is_dir() else name_or_path, config=config, **kwargs)
    except OSError as e:
        raise ModelError(f"{name_or_path}: could not load the weights: {str(e).splitlines()[0]}") from None


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
