"""TRL's ``SFTTrainer`` (a benchmark-only dependency: ``pip install trl``) on prompt / completion
pairs with completion-only loss, in one of its three batching modes as ``SFTConfig`` documents them:
``dynamic`` padding, ``padding_free=True`` (the batch flattened into one row with position ids) or
``packing=True`` with ``packing_strategy="bfd"`` (best-fit decreasing into rows of ``max_length``,
which TRL runs padding-free). Its attention is the model's (SDPA here; TRL recommends FlashAttention
for padding-free rows, which transformers 5 otherwise masks block-diagonally from the position ids)."""

from __future__ import annotations

import tempfile
from typing import Any

from tunebench.contenders.hf_trainer import clock_callback, training_args
from tunebench.measure import StepClock, counting
from tunebench.workload import Job, pairs

MODES = ("dynamic", "padding_free", "packing")


def run(job: Job, mode: str) -> dict[str, Any]:
    """``warmup + measured`` steps of ``SFTTrainer.train`` in ``mode`` (one of ``MODES``)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if mode not in MODES:
        raise ValueError(f"TRL mode must be one of {MODES}, got {mode!r}")
    prompts, responses = pairs(job.records)
    dataset = Dataset.from_dict({"prompt": prompts, "completion": responses})
    clock = StepClock(job.warmup, job.measured)
    with tempfile.TemporaryDirectory() as out:
        # padding-free without packing refuses a max_length (it cannot enforce it); the records are
        # already shorter than max_length here, so nothing is cut either way
        args = SFTConfig(**training_args(out, job), max_length=None if mode == "padding_free" else job.max_length,
                         completion_only_loss=True, packing=mode == "packing", packing_strategy="bfd",
                         padding_free=mode == "padding_free", dataset_num_proc=None)
        trainer = SFTTrainer(model=job.model, args=args, train_dataset=dataset, processing_class=job.tokenizer,
                             callbacks=[clock_callback(clock, job.device)])
        trainer.data_collator = counting(trainer.data_collator, clock)
        trainer.train()
    return clock.result()
