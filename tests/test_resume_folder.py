"""`python train.py resume=<run> [key=value ...]` continues the same run: its own config (not the
defaults), only the new overrides applied, the same folder, the original .hydra record untouched."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from instructune.config_check import ConfigError
from instructune.resume import resume_request, resumed_config


def _train(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_resume_requests_are_parsed_and_checked(tmp_path):
    assert resume_request(["trainer.max_steps=9"]) is None
    assert resume_request([f"resume={tmp_path}", "trainer.max_steps=9"]) == (tmp_path, ["trainer.max_steps=9"])
    with pytest.raises(ConfigError, match="without -m"):
        resume_request(["-m", f"resume={tmp_path}"])
    with pytest.raises(ConfigError, match="no .hydra/config.yaml there"):
        resumed_config(tmp_path, [])
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("trainer:\n  max_steps: 4\npeft:\n  r: 8\nckpt_path: null\n")
    assert resumed_config(tmp_path, ["trainer.max_steps=9"]).trainer.max_steps == 9
    assert resumed_config(tmp_path, []).ckpt_path == "last"
    with pytest.raises(ConfigError, match=r"'peft=ia3': peft.\* is fixed for a resumed run"):
        resumed_config(tmp_path, ["peft=ia3"])
    with pytest.raises(ConfigError, match=r"'optimizer.lr=0.1': optimizer.\* is fixed for a resumed run"):
        resumed_config(tmp_path, ["optimizer.lr=0.1"])  # the checkpoint's optimizer state would win
    with pytest.raises(ConfigError, match="'data=alpaca': data is not a setting of this run"):
        resumed_config(tmp_path, ["data=alpaca"])


def test_ckpt_path_must_name_a_checkpoint(tmp_path):
    from instructune.run_folder import RunFolder
    from instructune.trainer_parts import checkpoint_to_resume

    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    with pytest.raises(ConfigError) as caught:
        checkpoint_to_resume(str(notes), RunFolder(tmp_path))
    assert str(caught.value) == f"ckpt_path={notes}: {notes} is not a checkpoint (not written by torch.save)"
    deepspeed = tmp_path / "checkpoints" / "last.ckpt"
    deepspeed.mkdir(parents=True)  # DeepSpeed writes a folder
    assert checkpoint_to_resume("last", RunFolder(tmp_path)) == str(deepspeed)


@pytest.mark.slow
def test_resume_continues_the_run_with_its_own_settings(tmp_path):
    run = tmp_path / "run"
    first = _train("optimizer.lr=0.005", "trainer.max_steps=4", "data.source.max_train_records=32",
                   "eval.base=false", "eval.max_examples=2", "eval.max_new_tokens=2", "logger=csv",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    record = (run / ".hydra" / "config.yaml").read_text()
    resumed = _train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["lr"], summary["steps"], summary["status"]) == (0.005, 6, "ok")  # not the default 1e-2
    assert (run / ".hydra" / "config.yaml").read_text() == record
    assert (run / ".hydra" / "resume-1.yaml").read_text() == "overrides:\n- trainer.max_steps=6\n"
    assert (run / "checkpoints" / "last.ckpt").resolve().name == "epoch=2-step=6.ckpt"
    assert "max_steps: 6" in (run / "config.resumed.yaml").read_text()


@pytest.mark.slow
def test_resuming_a_folder_without_a_checkpoint_is_one_line(tmp_path):
    run = tmp_path / "run"
    assert _train("trainer.max_steps=2", "checkpoint=none", "eval.base=false", "eval.max_examples=2",
                  "eval.max_new_tokens=2", "logger=none", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    proc = _train(f"resume={run}", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: ckpt_path=last: {run / 'checkpoints'} has no last.ckpt; "
                                                    "nothing to resume (drop ckpt_path to start afresh)")
