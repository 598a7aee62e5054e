"""The Hydra application behind ``python train.py`` and ``instructune train``: config resolvers,
``.env``, the job's folder, clean errors. Both commands run ``train_app`` on the config groups
installed with the package (``pkg://instructune.conf``, i.e. the repository's ``conf/``), so they
compose the same config and write the same run folder, from any working directory."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from instructune.data.prompts import PromptStyleError
from instructune.data.records import DataError
from instructune.env import load_dotenv_file
from instructune.models.loading import ModelError

log = logging.getLogger("instructune")

CONFIG_PATH = "pkg://instructune.conf"
CONFIG_NAME = "train"

USER_ERRORS = (DataError, ModelError, PromptStyleError)


def _asset(name: str) -> str:
    from instructune.world.source import ASSETS

    path = ASSETS / name
    if not path.is_dir():
        raise ModelError(f"no embedded asset {name!r} under {ASSETS}; rebuild it from a checkout with "
                         "python tools/build_world.py (README: 'The embedded world')")
    return str(path)


def flat_name(text: str, limit: int = 200) -> str:
    """A sweep job's folder name from its overrides: one flat, portable path component (a value like
    ``data.path=a/x.json`` must not nest folders); long names keep a hash so they stay unique."""
    import hashlib
    import re

    flat = re.sub(r"[^A-Za-z0-9._=,+@-]", "-", text)
    if len(flat) > limit:
        flat = flat[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return flat


def accumulation_for(tokens_per_step: int, batch_size: int, max_seq_length: int) -> int:
    """Micro-batches per optimiser step so that one step holds at least ``tokens_per_step`` positions
    (``conf/trainer/gpu.yaml``: batch x accumulation x length >= 32k, the usual GPU recipe)."""
    return max(1, -(-int(tokens_per_step) // (int(batch_size) * int(max_seq_length))))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("instructune.accumulation_for"):
        OmegaConf.register_new_resolver("instructune.accumulation_for", accumulation_for)
    if not OmegaConf.has_resolver("instructune.asset"):
        OmegaConf.register_new_resolver("instructune.asset", _asset)
    if not OmegaConf.has_resolver("instructune.flat"):
        OmegaConf.register_new_resolver("instructune.flat", flat_name)


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

    In a sweep a failed job (whatever the error) is one line and the others still run; the sweep's
    exit status and its list of failures come from ``sweep_outcome.SweepOutcome`` at the end.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from instructune.sweep_outcome import report_failed_job
    from instructune.train import ConfigError, run

    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    if sweeping and _spawns_processes(cfg) and "SLURM_JOB_ID" not in os.environ:
        sys.exit(
            "error: multi-process training (trainer.strategy DDP/FSDP/DeepSpeed) cannot run inside a local -m sweep: "
            "Lightning starts the extra processes by re-running the command line, which would re-run the sweep. "
            "Run each configuration as its own `python train.py trainer=ddp ...`, or sweep on SLURM with "
            "hydra/launcher=slurm, where SLURM starts one task per device."
        )
    if sweeping and "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower() and not cfg.eval.get("selection_split"):
        sys.exit("error: hparams_search (Optuna) maximises tuned exact match on eval.selection_split; "
                 "set it (e.g. eval.selection_split=validation)")
    output_dir = Path(hydra_cfg.runtime.output_dir)
    group = Path(hydra_cfg.sweep.dir).name if sweeping else None
    try:
        summary = run(cfg, output_dir, sweep_group=group)
    except Exception as e:
        if sweeping:  # summary.json of the job already says failed and why
            report_failed_job(hydra_cfg.job.num, hydra_cfg.job.override_dirname, e, output_dir)
            return None
        if isinstance(e, (*USER_ERRORS, ConfigError)):
            log.error("%s", e)
            sys.exit(f"error: {e}")
        raise
    # the sweeper's objective (Optuna): exact match on the selection split, never on the test split
    chosen_on = (summary.get("selection") or {}).get("tuned") or {}
    return chosen_on.get("all")


def train_app(before_job: Callable[[], None] | None = None) -> None:
    """Parse the command line as Hydra does (overrides, ``-m``, ``--cfg`` ...) and run the job(s);
    ``before_job`` runs first in every job (``instructune train`` restores ``sys.argv`` there)."""
    import hydra

    def job(cfg: DictConfig) -> float | None:
        if before_job is not None:
            before_job()
        return main_job(cfg)

    prepare()
    from instructune.resume import resume, resume_request

    try:
        request = resume_request(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"error: {e}")
    if request is not None:  # `resume=<run>`: the run's own config, not a fresh composition
        if before_job is not None:
            before_job()
        resume(*request)
        return
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)(job)()
