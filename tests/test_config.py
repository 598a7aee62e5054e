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
    cfg = _compose("experiment=flan_t5_small_alpaca")
    assert (cfg.model.architecture, cfg.data.prompt.style, cfg.peft.r) == ("seq2seq", "flan", 16)


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


@pytest.mark.parametrize("experiment,model,data,grid", [
    ("masking_study", "world-gpt2", "world",
     {"peft": "full,lora", "masking": "true,false", "trainer.max_steps": "150,450",
      "data.source.max_train_records": "300,null", "seed": "0,1,2"}),
    ("peft_study_gpt2", "world-gpt2", "world",
     {"peft": "full,lora,prefix,prompt,ia3,bitfit", "optimizer.lr_scale": "0.33,1,3", "seed": "0,1,2"}),
    ("peft_study_t5", "world-t5", "world",
     {"peft": "full,lora,prefix,prompt,ia3", "optimizer.lr_scale": "0.33,1,3", "seed": "0,1,2"}),
    ("peft_study_gpt2_high_lr", "world-gpt2", "world",
     {"peft": "prefix,prompt,ia3,bitfit", "optimizer.lr_scale": "9", "seed": "0,1,2"}),
    ("peft_study_t5_high_lr", "world-t5", "world",
     {"peft": "prefix,prompt,ia3", "optimizer.lr_scale": "9", "seed": "0,1,2"}),
    # the GPU-scale versions: composed here, run where a GPU is
    ("masking_study_gpu", "gpt2-medium", "instruction_data",
     {"peft": "full,lora", "masking": "true,false", "trainer.max_steps": "117,234", "data.source.max_records": "550,null",
      "seed": "0,1,2"}),
    ("peft_study_gpu_flan_t5", "flan-t5-small", "alpaca",
     {"peft": "full,lora,prefix,prompt,ia3", "optimizer.lr_scale": "0.33,1,3", "seed": "0,1,2"}),
    ("peft_study_gpu_gpt2_medium", "gpt2-medium", "instruction_data",
     {"peft": "full,lora,prefix,prompt,ia3,bitfit", "optimizer.lr_scale": "0.33,1,3", "seed": "0,1,2"}),
])
def test_study_experiments_compose_with_their_grids(experiment, model, data, grid):
    cfg = _compose_with_hydra(f"experiment={experiment}")
    assert (cfg.model.name, cfg.data.name) == (model, data)
    assert dict(cfg.hydra.sweeper.params) == grid
    for key in grid:  # every swept key exists in the composed config (a typo would sweep nothing)
        node = cfg
        for part in key.split("."):
            assert part in node, f"{experiment}: sweeps {key}, which the config does not have"
            node = node[part]
    if "gpu" in experiment:
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    else:  # the CPU studies run two jobs at a time
        assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    if cfg.model.architecture == "seq2seq":
        assert cfg.data.prompt.style == "flan" and "bitfit" not in grid["peft"]
