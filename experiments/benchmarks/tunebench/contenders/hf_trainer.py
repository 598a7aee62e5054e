"""The HF Trainer tutorial recipe (the FLAN-T5 + LoRA tutorial's data handling): every example padded
to ``max_length``, ``default_data_collator``, ``Trainer`` at the case's batch size. Its loss covers
prompt and response, which costs the same FLOPs as a response-only loss."""

from __future__ import annotations

import tempfile
from typing import Any

from tunebench.measure import StepClock, counting, sync
from tunebench.workload import Job, pairs


def training_args(out: str, job: Job) -> dict[str, Any]:
    """``TrainingArguments`` shared with the TRL contenders: the hyper-parameters of every contender
    (AdamW 1e-4, linear schedule, clipping 1.0, the case's batch size), no logging, saving or evaluation."""
    return {"output_dir": out, "per_device_train_batch_size": job.batch_size, "max_steps": job.warmup + job.measured,
            "learning_rate": 1e-4, "lr_scheduler_type": "linear", "warmup_steps": 0, "max_grad_norm": 1.0,
            "logging_steps": 10**6, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
            "disable_tqdm": True, "dataloader_num_workers": 0, "seed": 0, "use_cpu": job.device == "cpu",
            "bf16": job.precision == "bf16-mixed", "gradient_checkpointing": False}


def clock_callback(clock: StepClock, device: str) -> Any:
    """A ``TrainerCallback`` that drives ``clock`` at the end of every optimiser step."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step_done(state.global_step, sync(device))

    return Clock()


def run(job: Job) -> dict[str, Any]:
    """``warmup + measured`` steps of ``Trainer.train`` on the padded, pre-tokenised records."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    from instructune.batch import IGNORE_INDEX

    tokenizer = job.tokenizer
    prompts, responses = pairs(job.records)
    texts = [p + r + tokenizer.eos_token for p, r in zip(prompts, responses, strict=True)]
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=job.max_length)
    labels = [[t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
              for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
    dataset = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                 "labels": labels})
    clock = StepClock(job.warmup, job.measured)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=job.model, args=TrainingArguments(**training_args(out, job)), train_dataset=dataset,
                          data_collator=counting(default_data_collator, clock),
                          callbacks=[clock_callback(clock, job.device)])
        trainer.train()
    return clock.result()
