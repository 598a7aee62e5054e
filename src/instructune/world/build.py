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
from instructune.world.source import WORLD_GPT2, WORLD_T5
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


T5_CONFIG = {"model_type": "t5", "d_model": 128, "d_kv": 32, "num_heads": 4, "d_ff": 512, "num_layers": 2,
             "num_decoder_layers": 2, "dropout_rate": 0.0, "feed_forward_proj": "relu"}


def prefix_lm_records(documents: list[str], seed: int, denoise_fraction: float = 0.5) -> list[dict[str, str]]:
    """The seq2seq pretraining objective, as records. A mixture, because the world's tasks need both:
    prefix-LM (encoder: a document's first sentences, decoder: the rest) teaches continuing text, and
    BART-style denoising (encoder: the document with 15% of its words deleted, decoder: the whole
    document) teaches reading the encoder and copying from it, which prefix-LM alone barely does
    (an 800-step prefix-LM-only base reached 4% exact match after full fine-tuning)."""
    import random
    import re

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


def build_t5(out: Path, tokenizer_dir: Path = WORLD_GPT2, seed: int = 0, steps: int = 2000, n_documents: int = 40000,
             batch_size: int = 32, lr: float = 3e-3) -> dict:
    """A tiny T5 pretrained on the same corpus with the prefix-LM objective, sharing the GPT-2 base's
    tokenizer (pad = EOS = decoder start), so ``model=world-t5`` runs the same studies offline."""
    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.prompts import make_prompt_style
    from instructune.data.records import InlineSource
    from instructune.data.tokenizer import load_tokenizer

    L.seed_everything(seed, verbose=False)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    records = prefix_lm_records(corpus_documents(seed, n_documents), seed)
    n_val = max(len(records) // 50, 10)
    source = InlineSource({"train": records[n_val:], "validation": records[:n_val]}, name="world prefix-LM")
    data = InstructionDataModule(source, tokenizer, make_prompt_style("custom", "{instruction}"),
                                 architecture="seq2seq", max_seq_length=128, batch_size=batch_size, seed=seed)
    pad = tokenizer.pad_token_id
    model = load_model(architecture="seq2seq", from_config={**T5_CONFIG, "vocab_size": len(tokenizer),
                                                              "pad_token_id": pad, "eos_token_id": tokenizer.eos_token_id,
                                                              "decoder_start_token_id": pad})
    _, total = count_parameters(model)
    module = InstructionTuningModule(model, "seq2seq", OptimizerConfig(lr=lr, weight_decay=0.1, warmup_ratio=0.03,
                                                                        schedule="cosine", betas=(0.9, 0.95)))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        gradient_clip_val=1.0, val_check_interval=min(400, steps), check_val_every_n_epoch=None,
                        limit_val_batches=20, deterministic=True, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    info = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "n_documents": n_documents,
            "objective": "half prefix-LM (encoder: first sentences, decoder: the rest), half denoising (encoder: 15% of words deleted, decoder: the document)", "parameters": total,
            "vocab_size": len(tokenizer), "val_loss": round(float(trainer.callback_metrics["val/loss"]), 4),
            "pretrain_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = pad
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("world T5 saved to %s: %s", out, info)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WORLD_GPT2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--documents", type=int, default=40000)
    parser.add_argument("--t5", action="store_true", help="build the seq2seq base (world-t5) instead; needs the "
                        "GPT-2 base's tokenizer, so build that first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.t5:
        build_t5(args.out if args.out != WORLD_GPT2 else WORLD_T5, seed=args.seed, steps=args.steps,
                 n_documents=args.documents)
    else:
        build(args.out, seed=args.seed, steps=args.steps, n_documents=args.documents)


if __name__ == "__main__":
    main()
