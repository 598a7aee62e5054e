"""Process environment: ``.env`` loading, W&B offline fallback, and secrets kept out of outputs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from instructune.wandb_mode import WandbModeError, resolve_wandb_mode

log = logging.getLogger(__name__)

# The secrets among the variables .env.example lists: their values are replaced by *** in everything
# written to a run folder (config.yaml, summary.json).
SECRET_VARIABLES = ("WANDB_API_KEY", "HF_TOKEN")

__all__ = ["SECRET_VARIABLES", "WandbModeError", "load_dotenv_file", "redact",
           "resolve_wandb_mode"]


def load_dotenv_file(path: str | Path = ".env") -> bool:
    """Load ``.env`` from the working directory if present; real environment variables win."""
    from dotenv import load_dotenv

    return bool(Path(path).is_file() and load_dotenv(path, override=False))


def redact(text: str) -> str:
    """Replace the values of secret variables with ``***`` (for anything written to a run folder)."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 6:
            text = text.replace(value, "***")
    return text
