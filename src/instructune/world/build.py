"""Rebuild the embedded world from scratch: corpus → tokenizer → GPT-2 base pretrained through this
framework's own LightningModule on the plain language-model objective.

    python -m instructune.world.build --seed 0 --out src/instructune/world/assets/world-gpt2

Deterministic for a seed on a given machine and library versions (same data, same init, same order).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from instructune.data.datamodule import TextDataModule
from instructune.data.prompts import STYLE_NAMES, make_prompt_style
from instructune.models.loading import count_parameters, load_model
from instructune.models.module import InstructionTuningModule, OptimizerConfig
from instructune.world.generator import corpus_documents, instruction_splits
from instructune.world.source import WORLD_GPT2
from instructune.world.tokenizer import train_tokenizer

log = logging.getLogger(__name__)

GPT2_CONFIG = {"model_type": "gpt2", "n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 256,
               "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def tokenizer_texts(seed: int, documents: list[str]) -> list[str]:
    """Corpus plus every prompt style's wrapping of the instruction records, so prompt words are
    whole tokens (the base model still never sees instruction format: it is not pretrained on these)."""
    records = [r for split in instruction_splits(seed).values() for r in split]
    styles = [make_prompt_style(n) for n in STYLE_NAMES if n not in ("chat", "custom")]
    prompts = [s.format(r["instruction"], r["input"]) + r["output"] for s in styles for r in records[:2000]]
    return documents + prompts


def build(out: Path, seed: int = 0, steps: int = 1500, n_documents: int = 40000, vocab_size: int = 2048,
          batch_size: int = 32, block_size: int = 128, lr: float = 3e-3) -> dict:
    L.seed_everything(seed, verbose=False)
    documents = corpus_documents(seed, n_documents)
    n_val = max(len(documents) // 50, 10)
    tokenizer = train_tokenizer(tokenizer_texts(seed, documents), vocab_size)
    model = load_model(architecture="causal", from_config={**GPT2_CONFIG, "vocab_size": len(tokenizer),
                                                             "eos_token_id": tokenizer.eos_token_id,
                                                             "bos_token_id": tokenizer.eos_token_id})
    trainable, total = count_parameters(model)
    log.info("world base: %s parameters, vocab %d", f"{total:,}", len(tokenizer))
    data = TextDataModule(documents[n_val:], documents[:n_val], tokenizer, block_size, batch_size)
    module = InstructionTuningModule(model, "causal", OptimizerConfig(lr=lr, weight_decay=0.1, warmup_ratio=0.03,
                                                                       schedule="cosine", betas=(0.9, 0.95)))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        gradient_clip_val=1.0, val_check_interval=min(400, steps), check_val_every_n_epoch=None,
                        limit_val_batches=20,
                        deterministic=True, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    val_loss = float(trainer.callback_metrics["val/loss"])
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"seed": seed, "steps": steps, "batch_size": batch_size, "block_size": block_size, "lr": lr,
            "n_documents": n_documents, "parameters": total, "vocab_size": len(tokenizer),
            "val_loss": round(val_loss, 4), "pretrain_seconds": round(wall, 1), "torch": torch.__version__}
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("world base saved to %s: %s", out, info)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WORLD_GPT2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--documents", type=int, default=40000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build(args.out, seed=args.seed, steps=args.steps, n_documents=args.documents)


if __name__ == "__main__":
    main()
