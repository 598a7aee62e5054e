"""A real 2-process DDP job (gloo, CPU) through train.py (a subprocess: Lightning starts the second
process by re-running the command line), against one process at twice the batch (run in-process)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import train_in_process
from test_train_entry import train

SETTINGS = ["peft=full", "trainer.max_steps=10", "trainer.val_check_interval=10", "data.source.max_train_records=160",
            "eval.max_examples=8", "eval.max_new_tokens=4", "checkpoint=none"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_twice_the_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    assert train("trainer=ddp_cpu", "data.batch_size=8", *SETTINGS, f"hydra.run.dir={tmp_path / 'ddp'}", env=env).returncode == 0
    assert train_in_process("data.batch_size=16", "logger=csv", *SETTINGS, f"hydra.run.dir={tmp_path / 'one'}").returncode == 0
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert ddp["status"] == "ok" and ddp["steps"] == one["steps"] == 10
    # each rank takes its half of every global batch and the loss is normalised by the global token
    # count, so the two runs take the same steps: equal to float rounding (stated tolerance 1e-4)
    for key in ("val/loss", "train/loss"):
        assert ddp["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-4)
    # rank 0 alone wrote the run folder: one summary, one W&B run, one exported model
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == [".hydra", "config.yaml", "csv", "model", "predictions.jsonl", "summary.json", "train.log",
                     "train_ddp_process_1.log", "wandb"]
    assert len(list((tmp_path / "ddp" / "wandb").glob("offline-run-*"))) == 1
    assert len((tmp_path / "ddp" / "predictions.jsonl").read_text().splitlines()) == 8


def test_ddp_inside_a_local_sweep_is_refused_clearly(tmp_path):
    proc = train("trainer=ddp_cpu", "peft=lora,ia3", f"hydra.sweep.dir={tmp_path}", multirun=True)
    assert proc.returncode == 1
    assert "cannot run inside a local -m sweep" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ddp_runs_a_peft_strategy(tmp_path):
    proc = train("trainer=ddp_cpu", "peft=lora", "logger=csv", "data.batch_size=8", "trainer.max_steps=4",
                 "trainer.val_check_interval=4", "data.source.max_train_records=64", "eval.max_examples=4",
                 "eval.max_new_tokens=4", "eval.base=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 4 and summary["params"]["trainable"] == 16384
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()
    # one checkpoint series, written by rank 0 (epoch-end checkpoint + the last.ckpt link)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]
