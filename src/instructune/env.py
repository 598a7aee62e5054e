"""Process environment: ``.env`` loading, W&B offline fallback, and secrets kept out of outputs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# The secrets among the variables .env.example lists: their values are replaced by *** in everything
# written to a run folder (config.yaml, summary.json).
SECRET_VARIABLES = ("WANDB_API_KEY", "HF_TOKEN")


def load_dotenv_file(path: str | Path = ".env") -> bool:
    """Load ``.env`` from the working directory if present; real environment variables win."""
    from dotenv import load_dotenv

    return bool(Path(path).is_file() and load_dotenv(path, override=False))


def configure_wandb_mode() -> str:
    """Without a key (and no explicit ``WANDB_MODE``), W&B runs offline: no login prompt, no network
    wait. Returns the mode in force."""
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.environ["WANDB_MODE"] if "WANDB_MODE" in os.environ else "online"


def redact(text: str) -> str:
    """Replace the values of secret variables with ``***`` (for anything written to a run folder)."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 6:
            text = text.replace(value, "***")
    return text
