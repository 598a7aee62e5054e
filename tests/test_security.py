"""Secrets stay out of run folders; remote code and pickled checkpoints stay off."""

from __future__ import annotations

import os

import pytest

from test_train_entry import TINY, train

FAKE_WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"
FAKE_HF_TOKEN = "hf_PlantedFakeTokenForTheLeakTest123456"


@pytest.mark.slow
def test_planted_keys_never_reach_the_run_folder(tmp_path):
    env = {**os.environ, "WANDB_API_KEY": FAKE_WANDB_KEY, "WANDB_MODE": "offline", "HF_TOKEN": FAKE_HF_TOKEN}
    proc = train(*TINY, "trainer.max_steps=4", "trainer.val_check_interval=4", f"hydra.run.dir={tmp_path}", env=env)
    assert proc.returncode == 0
    assert FAKE_WANDB_KEY not in proc.stdout + proc.stderr and FAKE_HF_TOKEN not in proc.stdout + proc.stderr
    scanned = set()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned.add(path.relative_to(tmp_path).as_posix())
            assert FAKE_WANDB_KEY.encode() not in data, path
            assert FAKE_HF_TOKEN.encode() not in data, path
    # every kind of file a run writes was scanned: summary, configs, logs, W&B offline files, checkpoint, model
    assert {"summary.json", "config.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml",
            "train.log", "predictions.jsonl", "checkpoints/last.ckpt", "csv/version_0/metrics.csv",
            "csv/version_0/hparams.yaml", "model/adapter_config.json", "model/adapter_model.safetensors",
            "model/instructune.json", "model/prompt_style.json", "wandb/debug.log"} <= scanned
    assert len([p for p in scanned if p.startswith("wandb/offline-run-") and p.endswith(".wandb")]) == 1


def test_remote_code_is_off_in_every_model_config():
    from pathlib import Path

    import yaml

    for path in sorted((Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["trust_remote_code"] is False, path


def test_checkpoints_load_weights_only(tmp_path):
    import pickle

    import torch

    from instructune.models.checkpoint_io import AtomicCheckpointIO

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "payload": Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "ok.ckpt")
    assert io.load_checkpoint(tmp_path / "ok.ckpt")["state_dict"]["w"].tolist() == [1.0, 1.0]
