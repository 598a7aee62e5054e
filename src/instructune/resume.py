"""``python train.py resume=<run folder> [key=value ...]``: continue a run where it stopped, with its own
config. Hydra would compose the *default* config again and overwrite the run's ``.hydra/`` record, so a
resume bypasses composition: it loads ``<run>/.hydra/config.yaml``, applies only the new overrides
(e.g. a larger ``trainer.max_steps``), and continues from ``<run>/checkpoints/last.ckpt`` in the same
folder. The original record stays as it is; each resume's overrides are written beside it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from instructune.config_check import ConfigError
from instructune.run_folder import JOB_CONFIG_FILE

log = logging.getLogger("instructune")

KEY = "resume"
# what the checkpoint carries: the model, its strategy, the optimizer and scheduler state
FIXED = ("model", "peft", "optimizer", "module", "seed")


def resume_request(argv: list[str]) -> tuple[Path, list[str]] | None:
    """The run folder and the other overrides when the command line asks for a resume."""
    asked = [a for a in argv if a.startswith(f"{KEY}=")]
    if not asked:
        return None
    if len(asked) > 1 or any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError(f"{KEY}=<run folder> resumes one run: give it once, without -m")
    others = [a for a in argv if a not in asked]
    if flags := [a for a in others if a.startswith("-")]:
        raise ConfigError(f"{KEY}=: only key=value overrides can follow, not {' '.join(flags)}")
    return Path(asked[0].split("=", 1)[1]).expanduser(), others


def resumed_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's saved config with ``overrides`` applied (Hydra's override grammar, plain keys only:
    changing a config group mid-run would not be the same run)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    saved = run_dir / JOB_CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(f"{KEY}={run_dir}: no .hydra/config.yaml there; is it a run folder of train.py?")
    cfg = OmegaConf.load(saved)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.split(".")[0] in FIXED:
            raise ConfigError(f"{KEY}=: '{override.input_line}': {key.split('.')[0]}.* is fixed for a resumed run "
                              "(the checkpoint holds its optimizer state and weights); start a new run to change it")
        if override.is_delete() or override.is_add() or override.is_sweep_override():
            raise ConfigError(f"{KEY}=: '{override.input_line}': only key=value overrides of existing keys")
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>" or isinstance(OmegaConf.select(cfg, key),
                                                                                     DictConfig):
            raise ConfigError(f"{KEY}=: '{override.input_line}': {key} is not a setting of this run (config "
                              "groups cannot change in a resume)")
        OmegaConf.update(cfg, key, override.value(), merge=False)
    if "ckpt_path=" not in " ".join(overrides):
        cfg.ckpt_path = "last"
    return cfg


def _record(run_dir: Path, overrides: list[str]) -> Path:
    """``.hydra/resume-<n>.yaml``: what this resume changed, beside the untouched original record."""
    n = 1
    while (run_dir / ".hydra" / f"resume-{n}.yaml").exists():
        n += 1
    out = run_dir / ".hydra" / f"resume-{n}.yaml"
    out.write_text(OmegaConf.to_yaml(OmegaConf.create({"overrides": overrides})))
    return out


def _log_to(run_dir: Path) -> None:
    """What Hydra's job logging does: the console and the run's train.log (appended)."""
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)


def resume(run_dir: Path, overrides: list[str]) -> None:
    """Continue the run in ``run_dir``; bad input is one line and exit status 1, as for a fresh run."""
    from instructune.entry import USER_ERRORS
    from instructune.train import _is_rank_zero, run

    try:
        cfg = resumed_config(run_dir, overrides)
        if _is_rank_zero():  # DDP children re-run the command line; one record, one log
            _log_to(run_dir)
            log.info("resuming %s (overrides: %s), recorded in %s", run_dir, " ".join(overrides) or "none",
                     _record(run_dir, overrides))
        run(cfg, run_dir)
    except (*USER_ERRORS, ConfigError) as e:
        log.error("%s", e)
        sys.exit(f"error: {e}")
