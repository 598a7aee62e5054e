"""Load what a run exported (``<run>/model``): base + adapter or the full model, its tokenizer and
its prompt style, ready to generate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from instructune.data.prompts import PromptStyle
from instructune.data.tokenizer import load_tokenizer
from instructune.models.loading import ModelError, load_model

META_FILE = "instructune.json"


@dataclass
class TunedModel:
    model: nn.Module
    tokenizer: Any
    prompt_style: PromptStyle
    architecture: str
    meta: dict[str, Any]


def model_folder(path: str | Path) -> Path:
    """Accept a run folder or its ``model/`` folder."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / META_FILE).is_file():
            return candidate
    raise ModelError(f"{path}: no {META_FILE} here or in {path / 'model'}; is this an instructune run folder?")


def load_tuned(path: str | Path) -> TunedModel:
    folder = model_folder(path)
    meta = json.loads((folder / META_FILE).read_text())
    architecture = meta["architecture"]
    if meta["adapter_only"]:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(meta["base_model"], architecture), folder)
    else:
        model = load_model(str(folder), architecture)
    model.eval()
    return TunedModel(model, load_tokenizer(str(folder)), PromptStyle.load(folder), architecture, meta)
