"""Tokenise once per (texts, tokenizer, window): sweep jobs over the same data load the cached ids.

Why not ``datasets.Dataset.map``'s cache: our records are plain Python lists (the embedded world,
inline sources, validated JSON), and map's fingerprint hashes the mapped function by pickling it
with the tokenizer, which breaks or changes on tokenizer wrappers and library upgrades. Here the key
is explicit: a hash of every formatted prompt and response, the tokenizer's full serialised
definition (vocabulary, merges, normaliser, post-processor, special tokens), ``max_seq_length``,
the architecture and the cache format version. Writes are atomic (temporary file + rename), so
parallel sweep jobs never read a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instructune.data.tokenize import TokenizedExample, TokenizeStats, tokenize_pairs

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 2: the overlength policy is part of the key; 3: the stats keep the kept records' indices


def default_cache_dir() -> Path:
    """``$INSTRUCTUNE_CACHE`` or ``~/.cache/instructune``, plus ``tokenized/``."""
    root = os.environ.get("INSTRUCTUNE_CACHE") or Path.home() / ".cache" / "instructune"
    return Path(root) / "tokenized"


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A hash of everything that decides the ids, or None when the tokenizer cannot be serialised
    (a slow, Python-only tokenizer): then nothing is cached rather than risking stale ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256(backend.to_str().encode())
    digest.update(json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id, tokenizer.pad_token_id]).encode())
    return digest.hexdigest()


class TokenCache:
    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()

    def key(self, prompts: Sequence[str], responses: Sequence[str], tokenizer: Any, max_seq_length: int,
            architecture: str, overlength: str = "truncate") -> str | None:
        fingerprint = tokenizer_fingerprint(tokenizer)
        if fingerprint is None:
            return None
        settings = [CACHE_FORMAT, fingerprint, max_seq_length, architecture, overlength]
        digest = hashlib.sha256(json.dumps(settings).encode())
        for prompt, response in zip(prompts, responses, strict=True):
            digest.update(prompt.encode())
            digest.update(b"\x00")
            digest.update(response.encode())
            digest.update(b"\x01")
        return digest.hexdigest()

    def tokenize(self, prompts: Sequence[str], responses: Sequence[str], tokenizer: Any, max_seq_length: int,
                 architecture: str, overlength: str = "truncate") -> tuple[list[TokenizedExample], TokenizeStats]:
        """``tokenize_pairs``, read from the cache when this exact input was tokenised before."""
        key = self.key(prompts, responses, tokenizer, max_seq_length, architecture, overlength)
        path = self.folder / f"{key}.json" if key else None
        if path is not None and path.is_file():
            try:
                stored = json.loads(path.read_text())
                examples = [TokenizedExample(ids, n, labels) for ids, n, labels in stored["examples"]]
                log.info("tokenised examples read from cache %s", path.name[:16])
                return examples, TokenizeStats(**stored["stats"])
            except (ValueError, KeyError, TypeError) as e:  # a damaged entry is rebuilt, never trusted
                log.warning("ignoring unreadable token cache entry %s: %s", path, e)
        examples, stats = tokenize_pairs(prompts, responses, tokenizer, max_seq_length, architecture, overlength)
        if path is not None:
            self._write(path, {"examples": [[e.input_ids, e.prompt_length, e.labels] for e in examples],
                               "stats": stats.__dict__})
        return examples, stats

    @staticmethod
    def _write(path: Path, payload: dict[str, Any]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
                json.dump(payload, f, separators=(",", ":"))
            os.replace(f.name, path)
        except OSError as e:  # a read-only or full cache disk slows the run down, it does not fail it
            log.warning("could not write the token cache %s: %s", path, e)
