"""The memory suite: peak memory of a few full fine-tuning or LoRA steps through instructune, each run
its own process. On the CPU the process's peak RSS (124M GPT-2 from config, world data, batch 4); on a
GPU the peak GPU memory its tensors took (gpt2-medium from config, instruction-data.json, bf16)."""

from __future__ import annotations

from typing import Any, NamedTuple

from tunebench import measure, workload

STRATEGIES = ("full", "lora")
NAME = "memory (LoRA vs full)"
"""What ``--case`` matches to run the GPU suite's memory comparison."""


class MemoryCase(NamedTuple):
    """The model, data and batch shape both strategies train on for ``steps`` steps."""

    model: str
    data: str
    max_length: int
    batch_size: int
    steps: int


CPU_MEMORY = MemoryCase("gpt2", "world", 256, workload.BATCH_SIZE, 5)
# gpt2-medium's LoRA-vs-full target; the GPU throughput cases' batch for it (16), dynamic padding
GPU_MEMORY = MemoryCase("gpt2-medium", "instruction-data", 1024, 16, 10)


def worker(strategy_name: str, case: MemoryCase) -> None:
    """``case.steps`` steps with ``strategy_name`` applied (bf16 on CUDA); prints its ``RESULT`` line."""
    import lightning as L

    from instructune.models.loading import count_parameters
    from instructune.models.module import InstructionTuningModule, OptimizerConfig
    from instructune.models.strategies import STRATEGIES
    from instructune.speed import configure_attention

    device = measure.device()
    configure_attention(device == "cuda")
    model, tokenizer = workload.model_and_tokenizer(case.model, device)  # seeded, from config
    _, params = count_parameters(model)
    model = STRATEGIES[strategy_name]().apply(model, "causal")  # "full" or "lora"
    data = workload.instructune_data(workload.records(case.data), tokenizer, case.max_length,
                                     batch_size=case.batch_size, device=device)
    module = InstructionTuningModule(model, "causal", OptimizerConfig(lr=1e-4))
    trainer = L.Trainer(max_steps=case.steps, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision="bf16-mixed" if device == "cuda" else "32-true", logger=False,
                        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    trainable, _ = count_parameters(model)
    result = {"peak_rss_mb": measure.peak_rss_mb(), "params": params, "trainable": trainable}
    if device == "cuda":
        result["peak_gpu_mb"] = measure.peak_gpu_mb()
    measure.emit(result)


def argv(strategy: str, case: MemoryCase) -> list[str]:
    """The worker's command line (``bench.py --worker-memory ...``)."""
    return ["--worker-memory", "--contender", strategy, "--model", case.model, "--data", case.data,
            "--max-length", str(case.max_length), "--batch-size", str(case.batch_size), "--steps", str(case.steps)]


def run_memory(case: MemoryCase, repeats: int) -> dict[str, Any]:
    """Full and LoRA runs alternated ``repeats`` times."""
    results: dict[str, Any] = {"machine": measure.machine(), "case": case._asdict(),
                               "runs": {name: [] for name in STRATEGIES}}
    for _ in range(repeats):
        for name in STRATEGIES:
            results["runs"][name].append(measure.launch(argv(name, case)))
            print(name, results["runs"][name][-1], flush=True)
    return results
