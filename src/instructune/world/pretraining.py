"""What the world's committed base models were pretrained on and with: their architectures, the texts
their tokenizer was trained on, the seq2seq objective's records, and the recipes (step counts, batch
sizes) behind the committed weights.

Plain data, no training: ``tools/build_world.py`` runs the pretraining through the framework's own
LightningModule, and tests check these descriptions against the committed assets' ``config.json`` and
``build_info.json``, so the documented rebuild command cannot drift from what was committed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from instructune.data.prompts import STYLE_NAMES, make_prompt_style
from instructune.world.generator import instruction_splits

GPT2_CONFIG: dict[str, Any] = {"model_type": "gpt2", "n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 256,
                               "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
T5_CONFIG: dict[str, Any] = {"model_type": "t5", "d_model": 128, "d_kv": 32, "num_heads": 4, "d_ff": 512,
                             "num_layers": 2, "num_decoder_layers": 2, "dropout_rate": 0.0,
                             "feed_forward_proj": "relu"}
VOCAB_SIZE = 2048  # the byte-level BPE both bases share (T5 reuses the GPT-2 base's tokenizer)


@dataclass(frozen=True)
class Recipe:
    """The settings one committed base was pretrained with, and so the build tool's defaults.

    ``block_size`` is the GPT-2 base's tokens per training block and the T5 base's longest encoder
    and decoder sequence. ``n_documents`` corpus documents are generated from ``seed``.
    """

    steps: int
    seed: int = 0
    n_documents: int = 40_000
    batch_size: int = 32
    block_size: int = 128
    lr: float = 3e-3


GPT2_RECIPE = Recipe(steps=1200)
T5_RECIPE = Recipe(steps=2000)

T5_OBJECTIVE = ("half prefix-LM (encoder: first sentences, decoder: the rest), half denoising "
                "(encoder: 15% of words deleted, decoder: the document)")


def tokenizer_texts(seed: int, documents: list[str]) -> list[str]:
    """Corpus plus every prompt style's wrapping of the instruction records, so prompt words are
    whole tokens (the base model still never sees instruction format: it is not pretrained on these)."""
    records = [r for split in instruction_splits(seed).values() for r in split]
    styles = [make_prompt_style(n) for n in STYLE_NAMES if n not in ("chat", "custom")]
    prompts = [s.format(r["instruction"], r["input"]) + r["output"] for s in styles for r in records[:2000]]
    return documents + prompts


def prefix_lm_records(documents: list[str], seed: int, denoise_fraction: float = 0.5) -> list[dict[str, str]]:
    """The seq2seq pretraining objective, as records. A mixture, because the world's tasks need both:
    prefix-LM (encoder: a document's first sentences, decoder: the rest) teaches continuing text, and
    BART-style denoising (encoder: the document with 15% of its words deleted, decoder: the whole
    document) teaches reading the encoder and copying from it, which prefix-LM alone barely does
    (an 800-step prefix-LM-only base reached 4% exact match after full fine-tuning)."""
    rng = random.Random(seed)
    records = []
    for doc in documents:
        if rng.random() < denoise_fraction:
            words = doc.split(" ")
            kept = [w for w in words if rng.random() >= 0.15] or words[:1]
            records.append({"instruction": " ".join(kept), "input": "", "output": doc})
            continue
        sentences = [s for s in re.split(r"(?<=\.)\s+", doc) if s]
        if len(sentences) < 2:
            continue
        k = rng.randint(1, len(sentences) - 1)
        records.append({"instruction": " ".join(sentences[:k]), "input": "", "output": " ".join(sentences[k:])})
    return records
