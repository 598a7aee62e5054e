"""Load a tokenizer by hub name or local folder and give it a pad token when it has none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instructune.data.records import DataError


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer`` with ``pad = eos`` when the tokenizer defines no pad token (GPT-2, Llama).

    Padding side is right for training; generation switches to left padding itself.
    """
    from transformers import AutoTokenizer

    local = Path(name_or_path).expanduser()
    if local.is_dir() and not any(local.glob("tokenizer*")) and not any(local.glob("*.model")) and not (local / "vocab.json").exists():
        raise DataError(f"{name_or_path}: this folder holds no tokenizer files (tokenizer.json, vocab.json, *.model)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.is_dir() else name_or_path,
                                                  trust_remote_code=trust_remote_code)
    except OSError as e:
        raise DataError(f"{name_or_path}: tokenizer could not be loaded: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer
