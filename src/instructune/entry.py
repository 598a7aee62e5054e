"""What ``train.py`` needs around a run: config resolvers, ``.env``, the job's folder, clean errors."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from instructune.data.prompts import PromptStyleError
from instructune.data.records import DataError
from instructune.env import load_dotenv_file
from instructune.models.loading import ModelError

log = logging.getLogger("instructune")

USER_ERRORS = (DataError, ModelError, PromptStyleError)


def _asset(name: str) -> str:
    from instructune.world.source import ASSETS

    path = ASSETS / name
    if not path.is_dir():
        raise ModelError(f"no embedded asset {name!r} under {ASSETS}; rebuild with python -m instructune.world.build")
    return str(path)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("instructune.asset"):
        OmegaConf.register_new_resolver("instructune.asset", _asset)


def prepare() -> None:
    """Run before Hydra composes anything."""
    register_resolvers()
    load_dotenv_file()
    for noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).addFilter(lambda r: "litlogger" not in r.getMessage() and "Tip:" not in r.getMessage())


def _spawns_processes(cfg: DictConfig) -> bool:
    strategy = cfg.trainer.get("strategy")
    name = str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy or "").lower()
    return any(k in name for k in ("ddp", "fsdp", "deepspeed"))


def main_job(cfg: DictConfig) -> float | None:
    """One Hydra job. Known bad input ends a single run with one line on stderr and exit status 1.

    In a sweep the error is raised instead: Hydra records it for this job and runs the others
    (a SystemExit would end the whole sweep); ``summary.json`` of the job says failed and why.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from instructune.train import ConfigError, run

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and _spawns_processes(cfg) and "SLURM_JOB_ID" not in os.environ:
        sys.exit(
            "error: multi-process training (trainer.strategy DDP/FSDP/DeepSpeed) cannot run inside a local -m sweep: "
            "Lightning starts the extra processes by re-running the command line, which would re-run the sweep. "
            "Run each configuration as its own `python train.py trainer=ddp ...`, or sweep on SLURM with "
            "hydra/launcher=slurm, where SLURM starts one task per device."
        )
    output_dir = Path(hydra_cfg.runtime.output_dir)
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    try:
        summary = run(cfg, output_dir, sweep_group=group)
    except (*USER_ERRORS, ConfigError) as e:
        log.error("%s", e)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        sys.exit(f"error: {e}")
    tuned = (summary.get("eval") or {}).get("tuned") or {}
    return tuned.get("all")
