"""The memory suite: peak RSS of a few full fine-tuning or LoRA steps through instructune on the
124M GPT-2 architecture built from config (no download), each run its own process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunebench import measure, workload

STRATEGIES = ("full", "lora")


def worker(strategy_name: str, steps: int) -> None:
    """``steps`` CPU steps with ``strategy_name`` applied; prints its ``RESULT`` line."""
    import lightning as L
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.models.loading import count_parameters
    from instructune.models.module import InstructionTuningModule, OptimizerConfig
    from instructune.models.strategies import STRATEGIES
    from instructune.world.source import WORLD_GPT2

    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    model = GPT2LMHeadModel(GPT2Config())  # the 124M gpt2 architecture (vocab 50257)
    _, params = count_parameters(model)
    strategy = STRATEGIES[strategy_name]()  # "full" or "lora"
    model = strategy.apply(model, "causal")
    data = workload.instructune_data(workload.records("world"), tokenizer, 256)
    module = InstructionTuningModule(model, "causal", OptimizerConfig(lr=1e-4))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    trainable, _ = count_parameters(model)
    measure.emit({"peak_rss_mb": measure.peak_rss_mb(), "params": params, "trainable": trainable})


def run_memory(repeats: int, out: Path) -> dict[str, Any]:
    """Full and LoRA runs alternated ``repeats`` times; the results JSON written at the end."""
    results: dict[str, Any] = {"machine": measure.machine(), "runs": {name: [] for name in STRATEGIES}}
    for _ in range(repeats):
        for name in STRATEGIES:
            results["runs"][name].append(measure.launch(["--worker-memory", "--contender", name, "--steps", "5"]))
            print(name, results["runs"][name][-1], flush=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results
