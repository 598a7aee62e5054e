"""Kill a run with SIGKILL after a checkpoint, resume it with ckpt_path=last, and get the same
losses as an uninterrupted run with the same seed. The killed run is a real subprocess; the
uninterrupted and the resumed runs go through train.py in this process (conftest.train_in_process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, train_in_process

# 64 records at batch 16: 4 steps an epoch, a checkpoint at every epoch end, 40 steps in all
SETTINGS = ["logger=none", "data.source.max_train_records=64", "data.batch_size=16", "trainer.max_steps=40",
            "trainer.val_check_interval=20", "eval.base=false", "eval.tuned=false", "export=false"]


def _kill_after_first_checkpoint(run_dir, overrides):
    proc = subprocess.Popen([sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("peft", ["full", "lora"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, peft):
    overrides = [f"peft={peft}", *SETTINGS]
    assert train_in_process(*overrides, f"hydra.run.dir={tmp_path / 'straight'}").returncode == 0
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())

    interrupted = tmp_path / "interrupted"
    assert _kill_after_first_checkpoint(interrupted, overrides) == -signal.SIGKILL
    assert not (interrupted / "summary.json").exists()  # it really died before finishing
    killed_at = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert killed_at in range(4, 40, 4)  # at an epoch end (4 steps an epoch), before the last step

    assert train_in_process(*overrides, "ckpt_path=last", f"hydra.run.dir={interrupted}").returncode == 0
    resumed = json.loads((interrupted / "summary.json").read_text())
    assert resumed["steps"] == straight["steps"] == 40
    for key in ("train/loss", "val/loss"):
        assert resumed["metrics"][key] == pytest.approx(straight["metrics"][key], abs=1e-5)
    # the draws per task come back from the checkpoint: the resumed run's tally covers all 40 steps
    assert resumed["mixture"] == straight["mixture"]
    assert sum(g["drawn"] for g in resumed["mixture"]["groups"].values()) == 40 * 16


def test_peft_checkpoints_hold_only_trainable_tensors(tmp_path):
    assert train_in_process("peft=lora", *SETTINGS[:-4], "trainer.max_steps=4", "trainer.val_check_interval=4",
                            "eval.base=false", "eval.tuned=false", "export=false", f"hydra.run.dir={tmp_path}").returncode == 0
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    # LoRA's A and B in the 4 layers' c_attn, and not one tensor of the frozen base
    assert sorted(ckpt["state_dict"]) == [f"model.base_model.model.transformer.h.{i}.attn.c_attn.lora_{ab}.default.weight"
                                          for i in range(4) for ab in "AB"]
    assert sum(v.numel() for v in ckpt["state_dict"].values()) == 16384
    assert {"optimizer_states", "lr_schedulers", "loops", "instructune_rng"} <= set(ckpt)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["epoch=0-step=4.ckpt", "last.ckpt"]  # the latest only; no temporary file left behind


@pytest.mark.parametrize("peft", ["lora", "full"])
def test_checkpoint_state_is_the_trainable_tensors_and_the_rng(tiny_dirs, peft):
    """The module's checkpoint hook (the unit under the run above): a peft checkpoint keeps the adapter
    alone, a full fine-tuning checkpoint everything; both carry the torch RNG state."""
    from instructune.models.loading import load_model
    from instructune.models.module import InstructionTuningModule
    from instructune.models.strategies import STRATEGIES

    module = InstructionTuningModule(STRATEGIES[peft]().apply(load_model(str(tiny_dirs["gpt2"])), "causal"), "causal")
    checkpoint = {"state_dict": module.state_dict()}
    everything = sorted(checkpoint["state_dict"])
    module.on_save_checkpoint(checkpoint)
    if peft == "lora":  # A and B of c_attn in the tiny GPT-2's 2 layers
        assert sorted(checkpoint["state_dict"]) == [
            f"model.base_model.model.transformer.h.{i}.attn.c_attn.lora_{ab}.default.weight" for i in range(2) for ab in "AB"]
    else:
        assert sorted(checkpoint["state_dict"]) == everything
    assert torch.equal(checkpoint["instructune_rng"], torch.get_rng_state())
