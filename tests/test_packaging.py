"""A regular (non-editable) install carries everything a run needs: `instructune train` from any folder
composes the same config groups and writes the same run folder as `python train.py` in the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

TINY = ["trainer.max_steps=3", "trainer.val_check_interval=3", "eval.max_examples=4", "eval.max_new_tokens=3",
        "eval.samples=0", "logger=csv", "data.source.max_train_records=48", "trainer.limit_val_batches=1"]


def test_every_package_and_config_group_is_listed_for_the_wheel():
    """pyproject lists its packages (conf/ is mapped to instructune.conf): a new subpackage or config
    group missing from the list would be left out of the wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = REPO / "src"
    packages = {".".join(p.relative_to(src).parts) for p in [src / "instructune", *src.joinpath("instructune").rglob("*")]
                if p.is_dir() and p.name != "__pycache__" and any(p.rglob("*.py"))}
    groups = {".".join(("instructune", "conf", *p.relative_to(REPO / "conf").parts))
              for p in (REPO / "conf").rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert listed == packages | groups | {"instructune.conf", "instructune.world.assets"}


def _run_folder(run: Path) -> dict:
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "csv" not in p.parts)
    summary = json.loads((run / "summary.json").read_text())
    return {"files": files, "config": summary["config"], "data": summary["data"], "params": summary["params"],
            "lr": summary["lr"], "steps": summary["steps"], "train/loss": summary["metrics"]["train/loss"],
            "val/loss": summary["metrics"]["val/loss"], "tuned": summary["eval"]["tuned"]["all"]}


@pytest.mark.slow
def test_installed_instructune_train_runs_like_train_py(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    site = tmp_path / "site"
    [wheel] = wheels.glob("instructune-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "INSTRUCTUNE_CACHE": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c", "import instructune; print(instructune.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the checkout

    installed = subprocess.run([str(site / "bin" / "instructune"), "train", *TINY, "hydra.run.dir=run"],
                               cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    checkout = subprocess.run([sys.executable, str(REPO / "train.py"), *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
                              cwd=REPO, env={**env, "PYTHONPATH": ""}, capture_output=True, text=True, timeout=600)
    assert checkout.returncode == 0, checkout.stderr[-3000:]

    assert _run_folder(elsewhere / "run") == _run_folder(tmp_path / "run")
    assert (elsewhere / "run" / "train.log").is_file() and (elsewhere / "run" / "model" / "instructune.json").is_file()
    # the same config: only where the embedded base lives differs
    base = {"installed": str(site / "instructune"), "checkout": str(REPO / "src" / "instructune")}
    assert ((elsewhere / "run" / "config.yaml").read_text().replace(base["installed"], "<pkg>")
            == (tmp_path / "run" / "config.yaml").read_text().replace(base["checkout"], "<pkg>"))
