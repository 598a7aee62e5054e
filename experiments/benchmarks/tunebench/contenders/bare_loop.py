"""The floor: instructune's batches (its sampler and collator, the same shapes and attention kernels)
through a hand-written forward / backward / clip / AdamW / scheduler step, so the gap to
``instructune`` is the framework's overhead."""

from __future__ import annotations

from typing import Any

from tunebench.measure import StepClock, sync
from tunebench.workload import Job, job_data


def run(job: Job) -> dict[str, Any]:
    """``warmup + measured`` hand-written steps, optimiser and schedule as ``InstructionTuningModule``."""
    import torch
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    from instructune.batch import IGNORE_INDEX
    from instructune.speed import configure_attention

    model, device, total = job.model, job.device, job.warmup + job.measured
    configure_attention(device == "cuda")  # the kernels instructune trains with
    data = job_data(job)
    clock = StepClock(job.warmup, job.measured)
    wait = sync(device)
    # as InstructionTuningModule: one fused kernel on CUDA, a multi-tensor one on the CPU
    kernel = {"fused": True} if device == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **kernel)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=job.precision == "bf16-mixed")
    model.train()
    step = 0
    while step < total:
        for batch in data.train_dataloader():
            clock.record(batch)
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            clock.step_done(step, wait)
            if step == total:
                break
    return clock.result()
