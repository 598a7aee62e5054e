"""Rebuild the embedded world's base models (GPT-2, then T5) from scratch.

Corpus → tokenizer → GPT-2 base, and on that tokenizer the T5 base, each pretrained through the
framework's own LightningModule (``InstructionTuningModule``) and ``load_model``, so the bases come
from the same training path as runs.

    python tools/build_world.py --seed 0 --steps 1200         # → src/instructune/world/assets/world-gpt2
    python tools/build_world.py --t5 --seed 0 --steps 2000    # → src/instructune/world/assets/world-t5

The defaults are the committed bases' recipes (``instructune.world.pretraining``). Deterministic for a
seed on a given machine and library versions (same data, same init, same order). A build tool, not
part of the installed package: ``instructune.world`` only describes the bases and ships their files.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from instructune.data.collate import collate_blocks, pack_blocks
from instructune.data.datamodule import InstructionDataModule
from instructune.data.prompts import make_prompt_style
from instructune.data.records import InlineSource
from instructune.data.tokenize import tokenize_text
from instructune.data.tokenizer_loading import load_tokenizer
from instructune.models.loading import count_parameters, load_model
from instructune.models.module import InstructionTuningModule, OptimizerConfig
from instructune.world.generator import corpus_documents
from instructune.world.pretraining import (GPT2_CONFIG, GPT2_RECIPE, T5_CONFIG, T5_OBJECTIVE, T5_RECIPE,
                                           VOCAB_SIZE, prefix_lm_records, tokenizer_texts)
from instructune.world.source import WORLD_GPT2, WORLD_T5
from instructune.world.tokenizer_training import train_tokenizer

log = logging.getLogger("build_world")


class TextDataModule(L.LightningDataModule):
    """Raw documents for the plain language-model objective (no prompt, every token a target): the
    GPT-2 base's pretraining data, which no instruction-tuning run uses."""

    def __init__(self, train_texts: Sequence[str], val_texts: Sequence[str], tokenizer: Any,
                 block_size: int = 128, batch_size: int = 32) -> None:
        super().__init__()
        self.train_texts, self.val_texts = train_texts, val_texts
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.batch_size = batch_size
        self.blocks: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.blocks:
            for split, texts in (("train", self.train_texts), ("validation", self.val_texts)):
                self.blocks[split] = pack_blocks(tokenize_text(texts, self.tokenizer), self.block_size)
            log.info("pretraining blocks: train=%d validation=%d (block %d tokens)",
                     len(self.blocks["train"]), len(self.blocks["validation"]), self.block_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(list(self.blocks["train"]), batch_size=self.batch_size, shuffle=True,
                          collate_fn=collate_blocks)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(list(self.blocks["validation"]), batch_size=self.batch_size, collate_fn=collate_blocks)


def _pretrain(model: nn.Module, architecture: str, data: L.LightningDataModule, steps: int,
              lr: float) -> tuple[float, float]:
    """Fit ``model`` for ``steps`` optimiser steps on CPU, deterministically; (validation loss, seconds).

    The same optimiser and Trainer for both bases: AdamW with a short warmup and cosine decay, gradient
    clipping, a validation pass every 400 steps on 20 batches.
    """
    optimizer = OptimizerConfig(lr=lr, weight_decay=0.1, warmup_ratio=0.03, schedule="cosine", betas=(0.9, 0.95))
    module = InstructionTuningModule(model, architecture, optimizer)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        gradient_clip_val=1.0, val_check_interval=min(400, steps), check_val_every_n_epoch=None,
                        limit_val_batches=20, deterministic=True, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return float(trainer.callback_metrics["val/loss"]), time.perf_counter() - start


def _save(out: Path, model: Any, tokenizer: Any, info: dict[str, Any]) -> None:
    """Write the model, its tokenizer and ``build_info.json`` (the recipe and its result) to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("saved to %s: %s", out, info)


def build_gpt2(out: Path, seed: int = GPT2_RECIPE.seed, steps: int = GPT2_RECIPE.steps,
               n_documents: int = GPT2_RECIPE.n_documents, batch_size: int = GPT2_RECIPE.batch_size,
               block_size: int = GPT2_RECIPE.block_size, lr: float = GPT2_RECIPE.lr) -> dict[str, Any]:
    """Train the world's tokenizer and pretrain the causal base on the corpus (plain LM objective)."""
    L.seed_everything(seed, verbose=False)
    documents = corpus_documents(seed, n_documents)
    n_val = max(len(documents) // 50, 10)
    tokenizer = train_tokenizer(tokenizer_texts(seed, documents), VOCAB_SIZE)
    model = load_model(architecture="causal", from_config={**GPT2_CONFIG, "vocab_size": len(tokenizer),
                                                             "eos_token_id": tokenizer.eos_token_id,
                                                             "bos_token_id": tokenizer.eos_token_id})
    _, total = count_parameters(model)
    log.info("world GPT-2 base: %s parameters, vocab %d", f"{total:,}", len(tokenizer))
    data = TextDataModule(documents[n_val:], documents[:n_val], tokenizer, block_size, batch_size)
    val_loss, seconds = _pretrain(model, "causal", data, steps, lr)
    info = {"seed": seed, "steps": steps, "batch_size": batch_size, "block_size": block_size, "lr": lr,
            "n_documents": n_documents, "parameters": total, "vocab_size": len(tokenizer),
            "val_loss": round(val_loss, 4), "pretrain_seconds": round(seconds, 1), "torch": torch.__version__}
    _save(out, model, tokenizer, info)
    return info


def build_t5(out: Path, tokenizer_dir: Path = WORLD_GPT2, seed: int = T5_RECIPE.seed, steps: int = T5_RECIPE.steps,
             n_documents: int = T5_RECIPE.n_documents, batch_size: int = T5_RECIPE.batch_size,
             max_seq_length: int = T5_RECIPE.block_size, lr: float = T5_RECIPE.lr) -> dict[str, Any]:
    """Pretrain a tiny T5 on the same corpus (prefix-LM and denoising records, fed through the
    instruction data module with a bare ``{instruction}`` prompt), sharing the GPT-2 base's tokenizer
    (pad = EOS = decoder start), so ``model=world-t5`` runs the same studies offline."""
    L.seed_everything(seed, verbose=False)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    records = prefix_lm_records(corpus_documents(seed, n_documents), seed)
    n_val = max(len(records) // 50, 10)
    source = InlineSource({"train": records[n_val:], "validation": records[:n_val]}, name="world prefix-LM")
    data = InstructionDataModule(source, tokenizer, make_prompt_style("custom", "{instruction}"),
                                 architecture="seq2seq", max_seq_length=max_seq_length, batch_size=batch_size,
                                 seed=seed)
    pad = tokenizer.pad_token_id
    model = load_model(architecture="seq2seq", from_config={**T5_CONFIG, "vocab_size": len(tokenizer),
                                                              "pad_token_id": pad, "decoder_start_token_id": pad,
                                                              "eos_token_id": tokenizer.eos_token_id})
    _, total = count_parameters(model)
    log.info("world T5 base: %s parameters, vocab %d", f"{total:,}", len(tokenizer))
    val_loss, seconds = _pretrain(model, "seq2seq", data, steps, lr)
    info = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "n_documents": n_documents,
            "objective": T5_OBJECTIVE, "parameters": total, "vocab_size": len(tokenizer),
            "val_loss": round(val_loss, 4), "pretrain_seconds": round(seconds, 1), "torch": torch.__version__}
    _save(out, model, tokenizer, info)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t5", action="store_true", help="build the seq2seq base (world-t5) instead, on the "
                        "tokenizer of an existing GPT-2 base (--tokenizer), so build that first")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {WORLD_GPT2} (with --t5: {WORLD_T5})")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"default: the committed bases', {GPT2_RECIPE.seed}")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimiser steps (default: the committed base's, {GPT2_RECIPE.steps}; "
                        f"with --t5 {T5_RECIPE.steps})")
    parser.add_argument("--documents", type=int, default=None,
                        help=f"corpus documents (default: {GPT2_RECIPE.n_documents}; "
                        f"with --t5 {T5_RECIPE.n_documents})")
    parser.add_argument("--tokenizer", type=Path, default=WORLD_GPT2,
                        help="with --t5: the GPT-2 base whose tokenizer to share")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    recipe = T5_RECIPE if args.t5 else GPT2_RECIPE
    seed = recipe.seed if args.seed is None else args.seed
    steps = recipe.steps if args.steps is None else args.steps
    n_documents = recipe.n_documents if args.documents is None else args.documents
    if args.t5:
        build_t5(args.out or WORLD_T5, args.tokenizer, seed=seed, steps=steps, n_documents=n_documents)
    else:
        build_gpt2(args.out or WORLD_GPT2, seed=seed, steps=steps, n_documents=n_documents)


if __name__ == "__main__":
    main()
