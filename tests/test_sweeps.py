"""A sweep a user can trust: every job runs, a failed job is one line, the sweep's exit status and last
lines say which jobs failed, job folders stay flat whatever the values, and the report reads them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from instructune.entry import flat_name
from instructune.sweep_report import write_report

GOOD = [{"instruction": f"Say word {i}.", "input": "", "output": f"word {i}"} for i in range(40)]


def test_job_folder_names_are_one_flat_component():
    assert flat_name("data.path=a/x.json,peft=lora") == "data.path=a-x.json,peft=lora"
    assert flat_name("data.path=../my data/x.json") == "data.path=..-my-data-x.json"
    long = flat_name("data.path=" + "a/" * 200, limit=50)
    assert len(long) == 50 and "/" not in long and long != flat_name("data.path=" + "b/" * 200, limit=50)


@pytest.mark.slow
def test_a_sweep_over_paths_with_a_bad_file_runs_every_job_and_ends_non_zero(tmp_path):
    for folder, rows in (("a", GOOD), ("b", [{"instruction": "x"}] * 40)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "d.json").write_text(json.dumps(rows))
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "data=json", "data.path=a/d.json,b/d.json", "logger=none",
         "trainer.max_steps=2", "trainer.val_check_interval=2", "eval.base=false", "eval.max_examples=2",
         "eval.max_new_tokens=2", "checkpoint=none", "export=false", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    fixed = ("checkpoint=none,data.path={},data=json,eval.base=False,eval.max_examples=2,eval.max_new_tokens=2,"
             "export=False,logger=none,trainer.max_steps=2,trainer.val_check_interval=2")
    reason = "DataError: b/d.json: field mapping input='input' names a column the data does not have (columns: instruction)"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: job 1 ({fixed.format('b/d.json')}) failed: {reason}", "error: 1 of 2 sweep jobs failed:"]
    assert proc.stderr.rstrip().splitlines()[-1].startswith("  job 1 (") and proc.stderr.rstrip().endswith(reason)
    # flat job folders, named by the overrides with `/` made safe
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [
        "0_" + fixed.format("a-d.json"), "1_" + fixed.format("b-d.json")]
    ok = json.loads((sweep / ("0_" + fixed.format("a-d.json")) / "summary.json").read_text())
    assert ok["status"] == "ok"
    report = write_report(sweep).read_text()
    # validation EM (the selection split, one seed: no interval), then the test split's tuned EM
    validation = f"{100 * ok['selection']['tuned']['all']:.1f}%"
    assert f"| `data.path=a/d.json` | 1 | {validation} | 0.0% (0.0–0.0) |" in report
    assert "| `data.path=b/d.json` | 1 | - |" in report
