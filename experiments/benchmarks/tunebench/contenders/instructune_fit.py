"""instructune as a user runs it: its data module (dynamic padding or best-fit packing, seeded
sampler) and ``InstructionTuningModule`` under a Lightning ``Trainer`` with its defaults."""

from __future__ import annotations

from typing import Any

from tunebench.measure import StepClock, flops_per_real_token, sync
from tunebench.workload import Job, instructune_data


def run(job: Job, packing: bool = False) -> dict[str, Any]:
    """Timed steps of ``trainer.fit``; unpacked runs also count the FLOPs per real token that the
    table's MFU column uses for every contender of the case."""
    data = instructune_data(job.records, job.tokenizer, job.max_length, packing=packing)
    result = fit(job, data)
    if not packing:
        result["flops_per_token"] = flops_per_real_token(job.model, job.tokenizer, data, job.device)
    return result


def fit(job: Job, data: Any) -> dict[str, Any]:
    """``warmup + measured`` steps of ``trainer.fit`` on ``data``, the clock driven by a callback."""
    import lightning as L

    from instructune.models.module import InstructionTuningModule, OptimizerConfig

    clock = StepClock(job.warmup, job.measured)
    wait = sync(job.device)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                 batch_idx: int) -> None:
            clock.record(batch)

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            clock.step_done(trainer.global_step, wait)

    module = InstructionTuningModule(job.model, "causal", OptimizerConfig(lr=1e-4, warmup_ratio=0.0))
    trainer = L.Trainer(max_steps=job.warmup + job.measured, accelerator="gpu" if job.device == "cuda" else "cpu",
                        devices=1, precision=job.precision, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0, callbacks=[Clock()])
    trainer.fit(module, datamodule=data)
    return clock.result()
