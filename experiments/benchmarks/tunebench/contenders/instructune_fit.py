"""instructune as a user runs it: its data module (dynamic padding or best-fit packing, seeded
sampler, ``train.py``'s batch shapes for the device) and ``InstructionTuningModule`` under a Lightning
``Trainer``, with ``train.py``'s attention switch and, for ``trainer.compile``, its ``compile_model``."""

from __future__ import annotations

from typing import Any

from tunebench.measure import StepClock, sync
from tunebench.workload import Job, job_data


def run(job: Job, packing: bool = False, compile: bool = False) -> dict[str, Any]:
    """Timed steps of ``trainer.fit`` (``compile``: through ``torch.compile`` with its defaults, as
    ``trainer.compile=true`` does)."""
    return fit(job, job_data(job, packing), compile_with={} if compile else None)


def fit(job: Job, data: Any, compile_with: dict[str, Any] | None = None) -> dict[str, Any]:
    """``warmup + measured`` steps of ``trainer.fit`` on ``data``, the clock driven by a callback."""
    import lightning as L

    from instructune.models.module import InstructionTuningModule, OptimizerConfig
    from instructune.speed import configure_attention

    configure_attention(job.device == "cuda")  # train.py's: cuDNN SDPA off on CUDA (instructune.speed)
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
    if compile_with is not None:
        module.compile_model(**compile_with)  # what train.py does for trainer.compile
    trainer = L.Trainer(max_steps=job.warmup + job.measured, accelerator="gpu" if job.device == "cuda" else "cpu",
                        devices=1, precision=job.precision, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=1.0, callbacks=[Clock()])
    trainer.fit(module, datamodule=data)
    return clock.result()
