"""How many positions a model can take, read from its config alone (no weights loaded), so the data
can be cut to fit before anything expensive happens."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def position_limit(name_or_path: str | None, from_config: dict[str, Any] | None = None,
                   trust_remote_code: bool = False) -> int | None:
    """``n_positions`` / ``max_position_embeddings`` of a model with learned or rotary absolute
    positions; None for relative-position models (T5), which take any length, and when the config
    cannot be read here (loading the model then reports why)."""
    from transformers import AutoConfig

    try:
        if from_config:
            params = dict(from_config)
            config = AutoConfig.for_model(params.pop("model_type"), **params)
        else:
            config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        log.debug("no position limit read for %s: %s", name_or_path, e)
        return None
    return _absolute_positions(config)


def _absolute_positions(config: Any) -> int | None:
    if getattr(config, "is_encoder_decoder", False) and getattr(config, "relative_attention_num_buckets", None):
        return None  # T5 family: relative position buckets
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return int(limit) if limit else None


def positions_left(model: Any) -> int | None:
    """Positions a loaded (possibly peft-wrapped) model has for prompt and answer together: its
    absolute positions less prompt / prefix virtual tokens; None for relative-position models."""
    limit = _absolute_positions(model.config)
    if limit is None:
        return None
    peft_config = (getattr(model, "peft_config", None) or {}).get("default")
    return limit - int(getattr(peft_config, "num_virtual_tokens", 0) or 0)
