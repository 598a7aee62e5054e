"""Every arm at its own best: ``hparams_search=lr_optuna`` (conf/hparams_search) runs Hydra's Optuna
sweeper over the learning rate, and the objective it maximises is each job's exact match on the
selection split (validation), never on the test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO

optuna = pytest.importorskip("optuna", reason="the [search] extra (hydra-optuna-sweeper) is not installed")

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
LR_SPACE = "tag(log, interval(1e-4, 1e-1))"


def compose_with_hydra(*overrides: str):
    """The config ``python train.py -m *overrides`` runs with, the ``hydra`` node (sweeper) included."""
    from hydra import compose, initialize_config_module

    from instructune.entry import CONFIG_NAME, CONFIG_PATH, register_resolvers

    register_resolvers()
    with initialize_config_module(config_module=CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)


def job_config(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"}


def tpe(seed: int, n_startup_trials: int) -> dict:
    """TPESampler's config as the plugin's dataclass fills it: our seed and startup trials, its defaults."""
    return {"_target_": "optuna.samplers.TPESampler", "seed": seed, "consider_prior": True, "prior_weight": 1.0,
            "consider_magic_clip": True, "consider_endpoints": False, "n_startup_trials": n_startup_trials,
            "n_ei_candidates": 24, "multivariate": False, "warn_independent_sampling": True}


def sweeper(n_trials: int, n_startup_trials: int, params: dict) -> dict:
    return {"_target_": OPTUNA_SWEEPER, "sampler": tpe(42, n_startup_trials), "direction": "maximize",
            "storage": None, "study_name": None, "n_trials": n_trials, "n_jobs": 1, "max_failure_rate": 0.0,
            "search_space": None, "params": params, "custom_search_space": None}


@pytest.mark.parametrize("option, expected", [
    ("lr_optuna", sweeper(12, 6, {"optimizer.lr": LR_SPACE})),
    ("lr_prompt_weight_optuna", sweeper(20, 8, {"optimizer.lr": LR_SPACE, "loss.prompt_weight": "interval(0.0, 1.0)"})),
])
def test_hparams_search_selects_the_optuna_sweeper_and_changes_nothing_else(option, expected):
    cfg = compose_with_hydra(f"hparams_search={option}")
    assert OmegaConf.to_container(cfg.hydra.sweeper) == expected
    assert (cfg.hydra.runtime.choices["hparams_search"], cfg.hydra.runtime.choices["hydra/sweeper"]) == (option, "optuna")
    # the job itself is the plain run's: only the task name (its output folder) differs
    plain = compose_with_hydra()
    assert job_config(cfg) == {**job_config(plain), "task_name": option}
    assert plain.hydra.sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def test_the_search_space_strings_are_the_distributions_documented():
    """What Optuna samples from: the learning rate log-uniform on [1e-4, 1e-1], lambda uniform on [0, 1]."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import LogUniformDistribution, UniformDistribution

    params = compose_with_hydra("hparams_search=lr_prompt_weight_optuna").hydra.sweeper.params
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert space == {"optimizer.lr": LogUniformDistribution(1e-4, 1e-1),
                     "loss.prompt_weight": UniformDistribution(0.0, 1.0)} and fixed == {}


# Small enough for ~30 s on 2 CPU cores, large enough that the first trial's validation and test exact
# match differ (0.125 vs 0.0625 at these settings, seeded): an objective read from the test split fails.
SMALL = ["trainer.max_steps=120", "trainer.val_check_interval=120", "data.source.max_train_records=480",
         "eval.max_examples=32", "eval.max_new_tokens=6", "eval.selection_max_examples=32", "eval.samples=0",
         "logger=none", "export=false", "eval.base=false", "checkpoint=none",
         "data.source.version=1"]  # the 12-family world: a short run scores above 0, so the trials can differ


@pytest.mark.slow
def test_an_optuna_sweep_maximises_validation_exact_match(tmp_path):
    """A real ``python train.py -m hparams_search=lr_optuna``: 2 trials, with the study kept in SQLite (so
    every trial's value can be read back, and the database storage the config documents is exercised)."""
    sweep, db = tmp_path / "sweep", tmp_path / "study.db"
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "hparams_search=lr_optuna", "hydra.sweeper.n_trials=2", *SMALL,
         f"hydra.sweep.dir={sweep}", f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=t"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]

    jobs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    summaries = [json.loads((j / "summary.json").read_text()) for j in jobs]
    assert [(s["status"], s["selection"]["split"], s["selection"]["tuned"]["n"]) for s in summaries] == [
        ("ok", "validation", 32)] * 2
    validation = [s["selection"]["tuned"]["all"] for s in summaries]
    test = [s["eval"]["tuned"]["all"] for s in summaries]
    assert validation != test, "settings too small: validation and test agree, the check below could not fail"

    trials = optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [t.value for t in trials] == validation  # trial i is job i: its objective is validation exact match
    lrs = [t.params["optimizer.lr"] for t in trials]
    assert [s["lr"] for s in summaries] == lrs  # the sampled lr is the one each run trained with
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and lrs[0] != lrs[1]

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = validation.index(max(validation))  # Optuna keeps the first of equal values
    assert results == {"name": "optuna", "best_params": {"optimizer.lr": lrs[best]}, "best_value": max(validation)}
