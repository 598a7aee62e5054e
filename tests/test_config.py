"""Every shipped config composes, and names what the issue promises (tested for composition only:
hub models and datasets cannot be downloaded here)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class

from conftest import REPO
from instructune.entry import register_resolvers

register_resolvers()


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


def test_default_is_world_gpt2_lora_masking():
    cfg = _compose()
    assert (cfg.data.name, cfg.model.name, cfg.masking, cfg.data.prompt.style) == ("world", "world-gpt2", True, "alpaca")
    assert get_class(cfg.peft._target_).name == "lora"
    assert cfg.model.name_or_path.endswith("world/assets/world-gpt2")


@pytest.mark.parametrize("model,hub,arch", [
    ("gpt2", "gpt2", "causal"), ("gpt2-medium", "gpt2-medium", "causal"),
    ("flan-t5-small", "google/flan-t5-small", "seq2seq"), ("flan-t5-base", "google/flan-t5-base", "seq2seq"),
    ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", "causal"),
])
def test_hub_models(model, hub, arch):
    cfg = _compose(f"model={model}")
    assert (cfg.model.name_or_path, cfg.model.architecture, cfg.model.trust_remote_code) == (hub, arch, False)


@pytest.mark.parametrize("peft", ["full", "lora", "prefix", "prompt", "ia3", "bitfit"])
def test_every_strategy_instantiates_with_its_default_lr(peft):
    from hydra.utils import instantiate

    strategy = instantiate(_compose(f"peft={peft}").peft)
    assert strategy.name == peft
    assert strategy.lr == {"full": 1e-3, "lora": 1e-2, "bitfit": 1e-2, "prefix": 1e-2, "ia3": 3e-2, "prompt": 3e-2}[peft]


def test_data_sources():
    assert _compose("data=alpaca").data.source.path == "tatsu-lab/alpaca"
    dolly = _compose("data=dolly").data.source.fields
    assert (dolly.input, dolly.output, dolly.task) == ("context", "response", "category")
    cfg = _compose("data=json", "data.path=/tmp/x.jsonl")
    assert cfg.data.source.path == "/tmp/x.jsonl" and list(cfg.data.source.splits.values())[1:] == [0.85, 0.10, 0.05]
    assert _compose("data=instruction_data").data.source.path.endswith("shared/data/instruction-data.json")


def test_experiments_compose():
    cfg = _compose("experiment=gpt2_medium_instruction_data")
    assert (cfg.model.name, cfg.data.name, get_class(cfg.peft._target_).name) == ("gpt2-medium", "instruction_data", "full")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.optimizer.lr == 5e-5
    assert (cfg.data.batch_size, cfg.trainer.accumulate_grad_batches) == (8, 1)  # the book's batch of 8 per step
    cfg = _compose("experiment=flan_t5_small_alpaca")
    assert (cfg.model.architecture, cfg.data.prompt.style, cfg.peft.r) == ("seq2seq", "flan", 16)
    assert (cfg.data.batch_size, cfg.trainer.accumulate_grad_batches) == (32, 1)


def _compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_distributed_trainers_compose():
    from hydra.utils import instantiate

    ddp = _compose("trainer=ddp").trainer
    assert (ddp.accelerator, ddp.use_distributed_sampler, ddp.strategy.find_unused_parameters) == ("gpu", False, False)
    cpu = _compose("trainer=ddp_cpu").trainer
    assert (cpu.accelerator, cpu.devices, cpu.strategy.process_group_backend) == ("cpu", 2, "gloo")
    fsdp = instantiate(_compose("trainer=fsdp").trainer.strategy)
    assert type(fsdp).__name__ == "FSDPStrategy"
    assert _compose("trainer=deepspeed").trainer.strategy.stage == 2


def test_slurm_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                              "trainer=ddp")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == ("gpu", 4, 4, 1)


def test_world_t5_is_an_embedded_seq2seq_base():
    from instructune.models.loading import count_parameters, load_model

    cfg = _compose("model=world-t5")
    assert cfg.model.architecture == "seq2seq" and cfg.model.name_or_path.endswith("world/assets/world-t5")
    model = load_model(cfg.model.name_or_path, "seq2seq")
    assert count_parameters(model)[1] == 1181440 and model.config.decoder_start_token_id == model.config.pad_token_id


# The CPU studies' experiment configs are the shared base of instructune.study designs (the study
# scripts pass the arms, learning rates, seeds and budgets): no grid of their own.
@pytest.mark.parametrize("experiment,model,peft", [
    ("masking_study", "world-gpt2", "lora"), ("peft_study_gpt2", "world-gpt2", "lora"), ("peft_study_t5", "world-t5", "lora"),
])
def test_cpu_study_bases_compose(experiment, model, peft):
    cfg = _compose_with_hydra(f"experiment={experiment}")
    choices = cfg.hydra.runtime.choices
    assert (cfg.model.name, cfg.data.name, choices.peft, choices.checkpoint, choices.logger) == (
        model, "world", peft, "none", "csv")
    steps = 600 if experiment == "masking_study" else 400  # the studies' longest budgets
    assert (cfg.optimizer.schedule, cfg.optimizer.warmup_steps, cfg.trainer.max_steps, cfg.export) == (
        "constant", steps // 20, steps, False)  # a fixed warm-up of 5% of the longest budget
    assert not cfg.hydra.sweeper.params
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    if cfg.model.architecture == "seq2seq":
        assert cfg.data.prompt.style == "flan"


# The GPU studies' bases: the literature's learning-rate regime (per-strategy grids under study.lr_grids,
# which the study scripts read), batch 8 per optimizer step for gpt2-medium as the LLMs-from-scratch ch. 7
# anchor, a constant rate so budgets of one run equal runs stopped there, and a runnable example grid.
GPU_STUDIES = {
    "masking_study_gpu": {
        "model": "gpt2-medium", "data": "instruction_data", "lr": 5e-5, "weight_decay": 0.1, "batch": (8, 1024, 1),
        "steps": (234, [117, 234]),
        "grid": {"loss.prompt_weight": "0,0.01,0.1,0.5,1", "data.source.max_train_records": "467,null", "seed": "0,1,2"},
        "lr_grids": {"full": [2e-5, 5e-5, 1e-4], "lora": [1e-4, 3e-4, 1e-3]},
    },
    "peft_study_gpu_gpt2_medium": {
        "model": "gpt2-medium", "data": "instruction_data", "lr": 5e-5, "weight_decay": 0.1, "batch": (8, 1024, 1),
        "steps": (234, [117, 234]),
        "grid": {"optimizer.lr": "2e-5,5e-5,1e-4", "seed": "0,1,2"},
        "lr_grids": {"full": [2e-5, 5e-5, 1e-4], "lora": [1e-4, 3e-4, 1e-3], "prefix": [1e-2, 3e-2, 1e-1],
                     "prompt": [1e-2, 3e-2, 1e-1, 3e-1], "ia3": [1e-3, 3e-3, 1e-2], "bitfit": [1e-4, 3e-4, 1e-3]},
    },
    "peft_study_gpu_flan_t5": {
        "model": "flan-t5-small", "data": "alpaca", "lr": 3e-4, "weight_decay": 0.0, "batch": (32, 512, 2),
        "steps": (3000, [750, 1500, 3000]),
        "grid": {"optimizer.lr": "3e-5,1e-4,3e-4,1e-3", "seed": "0,1,2"},
        "lr_grids": {"full": [3e-5, 1e-4, 3e-4, 1e-3], "lora": [3e-4, 1e-3, 3e-3], "prefix": [3e-3, 1e-2, 3e-2],
                     "prompt": [3e-2, 1e-1, 3e-1, 1.0], "ia3": [1e-3, 3e-3, 1e-2]},
    },
}


@pytest.mark.parametrize("experiment", sorted(GPU_STUDIES))
def test_gpu_study_bases_compose_with_the_literature_regime(experiment):
    from hydra.utils import instantiate

    from instructune.config_check import check_config

    want = GPU_STUDIES[experiment]
    cfg = _compose_with_hydra(f"experiment={experiment}")
    choices = cfg.hydra.runtime.choices
    assert (cfg.model.name, cfg.data.name, choices.peft, choices.trainer, choices.checkpoint, choices.logger) == (
        want["model"], want["data"], "full", "gpu", "none", "wandb")
    assert (cfg.trainer.accelerator, cfg.trainer.precision, cfg.export) == ("gpu", "bf16-mixed", False)
    assert (cfg.optimizer.lr, cfg.optimizer.lr_scale, cfg.optimizer.weight_decay, cfg.optimizer.schedule,
            cfg.optimizer.warmup_steps) == (want["lr"], 1.0, want["weight_decay"], "constant",
                                            -(-cfg.trainer.max_steps // 20))
    assert (cfg.data.batch_size, cfg.data.max_seq_length, cfg.trainer.accumulate_grad_batches) == want["batch"]
    assert (cfg.trainer.max_steps, list(cfg.eval.budgets)) == want["steps"]
    assert (cfg.data.source.max_records, cfg.data.source.max_train_records) == (None, None)
    assert dict(cfg.hydra.sweeper.params) == want["grid"]
    for key in want["grid"]:  # every swept key exists in the composed config (a typo would sweep nothing)
        node = cfg
        for part in key.split("."):
            assert part in node, f"{experiment}: sweeps {key}, which the config does not have"
            node = node[part]
    grids = {k: list(v) for k, v in cfg.study.lr_grids.items()}
    assert grids == want["lr_grids"]
    assert all(g == sorted(g) and len(set(g)) == len(g) >= 3 for g in grids.values())
    if cfg.model.architecture == "seq2seq":  # T5 has no bias terms: no BitFit arm
        assert cfg.data.prompt.style == "flan" and "bitfit" not in grids
    run_cfg = _compose(f"experiment={experiment}")
    check_config(run_cfg)  # the study key, which the run ignores, passes the config check
    assert instantiate(run_cfg.peft).name == "full"


@pytest.mark.parametrize("experiment", sorted(GPU_STUDIES))
def test_gpu_full_fine_tuning_grid_brackets_5e_5(experiment):
    """5e-5, the gpt2-medium anchor (LLMs-from-scratch ch. 7) and transformers' AdamW default, lies strictly
    inside every GPU study's full fine-tuning grid: the tuning can show a worse rate on both sides of it."""
    cfg = _compose(f"experiment={experiment}")
    grid = list(cfg.study.lr_grids.full)
    assert min(grid) < 5e-5 < max(grid)
    if cfg.model.name == "gpt2-medium":  # the anchor itself is a point, with a neighbour on both sides
        assert 5e-5 in grid[1:-1] and cfg.optimizer.lr == 5e-5


def test_json_source_cuts_the_train_split_by_max_train_records():
    from hydra.utils import instantiate

    from instructune.config_check import ConfigError, check_config
    from instructune.data.records import DatasetSource

    cfg = _compose("data=json", "data.path=x.json", "data.source.max_train_records=20")
    source = instantiate(cfg.data.source)
    assert isinstance(source, DatasetSource) and (source.max_train_records, source.max_records) == (20, None)
    with pytest.raises(ConfigError) as caught:
        check_config(_compose("data=json", "data.path=x.json", "data.source.max_train_records=0"))
    assert str(caught.value) == "data.source.max_train_records=0: must be an integer >= 1 (or null: every record)"
    check_config(_compose("data=instruction_data", "data.source.max_train_records=467"))
