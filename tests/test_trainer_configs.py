"""Every ``conf/trainer/*.yaml`` passes only arguments its classes take: the Trainer's own keys against
``lightning.Trainer``, the strategy's against the strategy class and, for the keys a strategy forwards
through ``**kwargs``, against the torch class it wraps (Lightning accepts those unchecked, so a wrong key
would only fail on the GPU, inside ``fit``). Then the FSDP policies on real models (world-gpt2, tiny Llama
and T5, plain and with LoRA), and torch's FSDP itself on two CPU processes."""

from __future__ import annotations

import importlib.util
import inspect
from collections import Counter
from typing import Any

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import OmegaConf
from peft import PeftModel
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, ShardingStrategy, StateDictType
from torch.nn.parallel import DistributedDataParallel

from conftest import REPO
from instructune.config_check import ConfigError, check_config
from instructune.entry import register_resolvers
from instructune.instantiate import build
from instructune.models.loading import ModelError, load_model
from instructune.models.module import InstructionTuningModule
from instructune.models.sharding import CheckpointedBlocks, TransformerBlocks
from instructune.models.strategies import STRATEGIES
from instructune.train import NOT_TRAINER_ARGS
from instructune.world.source import ASSETS

register_resolvers()

TRAINERS = sorted(p.stem for p in (REPO / "conf" / "trainer").glob("*.yaml"))
WITHOUT_STRATEGY = ["cpu", "default", "gpu"]  # Lightning's default strategy for the devices given
# Strategies that forward unknown keys to the torch class they wrap, less the arguments they pass it themselves.
FORWARDS = {FSDPStrategy: (FullyShardedDataParallel, {"module", "device_id"}),
            DDPStrategy: (DistributedDataParallel, {"module", "device_ids"})}


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def _trainer_node(name: str) -> dict[str, Any]:
    return OmegaConf.to_container(_compose(f"trainer={name}").trainer, resolve=True)


def _named(cls: Any) -> set[str]:
    return {n for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}


def _takes_kwargs(cls: Any) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def unknown_strategy_keys(node: dict[str, Any]) -> set[str]:
    """Keys of a strategy node that neither the strategy nor the class it forwards ``**kwargs`` to takes."""
    cls = get_class(node["_target_"])
    keys = set(node) - {"_target_"}
    if not _takes_kwargs(cls):
        return keys - _named(cls)
    wrapped, passed_by_strategy = next(v for k, v in FORWARDS.items() if issubclass(cls, k))
    return keys - _named(cls) - (_named(wrapped) - passed_by_strategy)


def test_every_trainer_config_is_found():
    assert TRAINERS == ["cpu", "ddp", "ddp_cpu", "deepspeed", "deepspeed_zero3", "default", "fsdp", "gpu"]


@pytest.mark.parametrize("name", TRAINERS)
def test_trainer_keys_are_trainer_arguments(name):
    node = _trainer_node(name)
    assert get_class(node.pop("_target_")) is L.Trainer
    for key in NOT_TRAINER_ARGS:
        node.pop(key, None)
    assert set(node) - _named(L.Trainer) == set()


@pytest.mark.parametrize("name", sorted(set(TRAINERS) - set(WITHOUT_STRATEGY)))
def test_strategy_keys_are_arguments_of_the_strategy_or_the_class_it_wraps(name):
    assert unknown_strategy_keys(_trainer_node(name)["strategy"]) == set()


@pytest.mark.parametrize("name", WITHOUT_STRATEGY)
def test_single_device_trainers_leave_the_strategy_to_lightning(name):
    assert "strategy" not in _trainer_node(name)


def test_the_key_check_catches_a_ddp_key_under_fsdp():
    node = {"_target_": "lightning.pytorch.strategies.FSDPStrategy", "find_unused_parameters": False,
            "limit_all_gathers": True, "state_dict_type": "full"}
    assert unknown_strategy_keys(node) == {"find_unused_parameters"}
    assert unknown_strategy_keys({"_target_": "lightning.pytorch.strategies.DDPStrategy", "device_ids": [0],
                                  "static_graph": True}) == {"device_ids"}
    assert unknown_strategy_keys({"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy", "stage": 3,
                                  "find_unused_parameters": False}) == {"find_unused_parameters"}


def _build_strategy(name: str):
    return build(_compose(f"trainer={name}").trainer.strategy, "trainer.strategy")


@pytest.mark.parametrize("name,backend", [("ddp", "nccl"), ("ddp_cpu", "gloo")])
def test_ddp_strategies_build_with_ddp_arguments_only(name, backend):
    strategy = _build_strategy(name)
    assert type(strategy) is DDPStrategy
    assert (strategy._ddp_kwargs, strategy._process_group_backend) == ({"find_unused_parameters": False}, backend)


def test_fsdp_builds_with_model_derived_policies_and_full_checkpoints():
    strategy = _build_strategy("fsdp")
    assert type(strategy) is FSDPStrategy
    assert (strategy._state_dict_type, strategy.sharding_strategy) == ("full", ShardingStrategy.FULL_SHARD)
    # what Lightning hands FullyShardedDataParallel besides the module, device and precision: nothing DDP's
    assert set(strategy.kwargs) == {"auto_wrap_policy", "use_orig_params"} and strategy.kwargs["use_orig_params"]
    wrap = strategy.kwargs["auto_wrap_policy"]
    checkpoint = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    assert type(wrap) is TransformerBlocks and (wrap.blocks, wrap.trainable_leaves) == ((), True)
    assert type(checkpoint) is CheckpointedBlocks and (checkpoint.blocks, checkpoint.trainable_leaves) == ((), False)


def test_fsdp_block_names_set_once_reach_both_policies():
    cfg = _compose("trainer=fsdp", "trainer.strategy.auto_wrap_policy.blocks=[MyBlock,OtherBlock]")
    strategy = cfg.trainer.strategy
    assert list(strategy.auto_wrap_policy.blocks) == list(strategy.activation_checkpointing_policy.blocks) == [
        "MyBlock", "OtherBlock"]


def test_fsdp_activation_checkpointing_turns_off_with_null():
    cfg = _compose("trainer=fsdp", "trainer.strategy.activation_checkpointing_policy=null")
    strategy = build(cfg.trainer.strategy, "trainer.strategy")
    assert strategy._activation_checkpointing_kwargs == {} and type(strategy.kwargs["auto_wrap_policy"]) is TransformerBlocks


def test_fsdp_sets_no_norm_clipping_which_lightning_refuses_under_fsdp():
    with pytest.raises(MisconfigurationException, match="gradient_clip_algorithm='norm'.*not supported"):
        FSDPPrecision("bf16-mixed").clip_grad_by_norm(None, 1.0)
    assert _trainer_node("fsdp")["gradient_clip_val"] is None


@pytest.mark.parametrize("name,stage,offloaded", [("deepspeed", 2, {"offload_optimizer": False}),
                                                  ("deepspeed_zero3", 3, {"offload_optimizer": False,
                                                                          "offload_parameters": False})])
def test_deepspeed_configs_name_their_zero_stage(name, stage, offloaded):
    node = _trainer_node(name)["strategy"]
    assert node == {"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy", "stage": stage,
                    "exclude_frozen_parameters": True, **offloaded}


@pytest.mark.parametrize("name", ["cpu", "default", "ddp_cpu"])
def test_cpu_trainers_build(name):
    trainer = build(_compose(f"trainer={name}").trainer, "trainer", drop=NOT_TRAINER_ARGS, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False)
    assert isinstance(trainer, L.Trainer) and trainer.num_devices == (2 if name == "ddp_cpu" else 1)
    assert type(trainer.strategy).__name__ == ("DDPStrategy" if name == "ddp_cpu" else "SingleDeviceStrategy")


def _without_deepspeed(monkeypatch, installed: bool = False):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        (find_spec("json") if installed else None) if name == "deepspeed" else find_spec(name, *a)))


@pytest.mark.parametrize("override,shown", [("trainer=deepspeed", "DeepSpeedStrategy"),
                                            ("trainer=deepspeed_zero3", "DeepSpeedStrategy"),
                                            ("+trainer.strategy=deepspeed_stage_3", "deepspeed_stage_3")])
def test_deepspeed_without_the_package_is_one_line_before_anything_loads(monkeypatch, override, shown):
    _without_deepspeed(monkeypatch)
    with pytest.raises(ConfigError) as caught:
        check_config(_compose(override))
    assert str(caught.value) == (f"trainer.strategy={shown}: the deepspeed package is not installed; pip install "
                                 "deepspeed (on a CUDA machine), or use trainer=fsdp")
    _without_deepspeed(monkeypatch, installed=True)
    check_config(_compose(override))


def test_deepspeed_strategy_built_without_the_package_is_one_line_too():
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(ConfigError) as caught:  # as train.fit builds it: the strategy inside the trainer node
        build(_compose("trainer=deepspeed_zero3").trainer, "trainer", drop=NOT_TRAINER_ARGS, logger=False)
    assert str(caught.value) == ("trainer: To use the `DeepSpeedStrategy`, you must have DeepSpeed installed. "
                                 "Install it by running `pip install -U deepspeed`.")


def test_slurm_launcher_takes_its_nodes_from_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra.core.plugins import Plugins

    cfg = _compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=ddp", "trainer.num_nodes=2",
                   "hydra.launcher.gpus_per_node=4", hydra=True)
    launcher = Plugins.instance()._instantiate(cfg.hydra.launcher)  # as Hydra builds it for `-m`
    assert {k: launcher.params[k] for k in ("partition", "nodes", "gpus_per_node", "tasks_per_node")} == {
        "partition": "gpu", "nodes": 2, "gpus_per_node": 4, "tasks_per_node": 4}
    assert _compose("hydra/launcher=slurm", "trainer=default", hydra=True).hydra.launcher.nodes == 1


# --- the FSDP policies on real models -------------------------------------------------------------------------

LLAMA = {"model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}
T5 = {"model_type": "t5", "vocab_size": 32, "d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 2,
      "num_decoder_layers": 2, "num_heads": 2}


def _world_gpt2():
    return load_model(str(ASSETS / "world-gpt2"), "causal")


def _model(family: str):
    if family == "world-gpt2":
        return _world_gpt2(), "causal"
    config, architecture = {"llama": (LLAMA, "causal"), "t5": (T5, "seq2seq")}[family]
    return load_model(architecture=architecture, from_config=config), architecture


def _selected(policy, root) -> list[str]:
    """Names (under ``root``) of the modules the policy selects."""
    chosen = policy._run_policy(root, set(), {})
    return sorted(name for name, module in root.named_modules() if module in chosen)


# block names under the plain model, and the LoRA leaves peft adds inside them (default LoRA targets)
BLOCKS = {"world-gpt2": [f"transformer.h.{i}" for i in range(4)],
          "llama": ["model.layers.0", "model.layers.1"],
          "t5": ["decoder.block.0", "decoder.block.1", "encoder.block.0", "encoder.block.1"]}
LORA_TARGETS = {"world-gpt2": ["attn.c_attn"], "llama": ["self_attn.q_proj", "self_attn.v_proj"],
                "t5": ["layer.0.SelfAttention.q", "layer.0.SelfAttention.v"]}


def _lora_leaves(family: str) -> list[str]:
    targets = [f"{block}.{t}" for block in BLOCKS[family] for t in LORA_TARGETS[family]]
    if family == "t5":  # decoder blocks: cross-attention q and v too
        targets += [f"{b}.layer.1.EncDecAttention.{x}" for b in BLOCKS["t5"] if b.startswith("decoder") for x in "qv"]
    return [f"base_model.model.{t}.lora_{ab}.default" for t in targets for ab in "AB"]


@pytest.mark.parametrize("family", ["world-gpt2", "llama", "t5"])
def test_the_policy_wraps_exactly_the_blocks_the_model_declares(family):
    model, _ = _model(family)
    assert _selected(TransformerBlocks(trainable_leaves=True), model) == BLOCKS[family]  # nothing frozen: no leaves
    assert _selected(CheckpointedBlocks(), model) == BLOCKS[family]


@pytest.mark.parametrize("family", ["world-gpt2", "llama", "t5"])
def test_through_peft_and_the_lightning_module_blocks_and_lora_leaves_are_units(family):
    model, architecture = _model(family)
    module = InstructionTuningModule(STRATEGIES["lora"](r=2).apply(model, architecture), architecture)
    blocks = sorted(f"model.base_model.model.{b}" for b in BLOCKS[family])
    leaves = [f"model.{leaf}" for leaf in _lora_leaves(family)]
    assert len(leaves) == {"world-gpt2": 8, "llama": 8, "t5": 24}[family]
    assert _selected(TransformerBlocks(trainable_leaves=True), module) == sorted(blocks + leaves)
    assert _selected(TransformerBlocks(), module) == _selected(CheckpointedBlocks(), module) == blocks


def test_the_policy_skips_ignored_modules_and_copies_the_root_kwargs():
    model = _world_gpt2()
    root_kwargs = {"sharding_strategy": "x"}
    chosen = TransformerBlocks()._run_policy(model, {model.transformer.h[0]}, root_kwargs)
    assert list(chosen) == list(model.transformer.h[1:])
    assert all(kwargs == root_kwargs and kwargs is not root_kwargs for kwargs in chosen.values())


def test_a_model_without_declared_blocks_is_a_one_line_error_naming_the_setting():
    plain = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    with pytest.raises(ModelError) as caught:
        TransformerBlocks()._run_policy(plain, set(), {})
    assert str(caught.value) == ("trainer=fsdp: a Sequential model declares no transformer block classes "
                                 "(_no_split_modules) to shard and checkpoint by; name them with "
                                 "trainer.strategy.auto_wrap_policy.blocks=[<BlockClass>,...]")
    assert _selected(TransformerBlocks(["Linear"]), plain) == ["0", "2"]
    with pytest.raises(ModelError) as caught:
        TransformerBlocks(["GPT2Blok"])._run_policy(_world_gpt2(), set(), {})
    assert str(caught.value) == ("trainer=fsdp: no module of a gpt2 model is a GPT2Blok; set "
                                 "trainer.strategy.auto_wrap_policy.blocks to its block class names")


def test_activation_checkpointing_refuses_prefix_tuning_in_one_line_and_keeps_prompt_tuning():
    prefix = STRATEGIES["prefix"](num_virtual_tokens=2).apply(_world_gpt2(), "causal")
    with pytest.raises(ModelError) as caught:
        CheckpointedBlocks()._run_policy(prefix, set(), {})
    assert str(caught.value) == ("peft=prefix cannot be combined with activation checkpointing (peft passes the prefix "
                                 "as a key/value cache, which recomputation extends twice); set "
                                 "trainer.strategy.activation_checkpointing_policy=null or use peft=lora")
    prompt = STRATEGIES["prompt"](num_virtual_tokens=2, init="RANDOM").apply(_world_gpt2(), "causal")
    assert len(CheckpointedBlocks()._run_policy(prompt, set(), {})) == 4


def _batch():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _lora_module():
    torch.manual_seed(0)  # LoRA's A is random, B zero: one step moves B only
    return InstructionTuningModule(STRATEGIES["lora"](r=2, dropout=0.0).apply(_world_gpt2(), "causal"))


def _sgd_step(module, forward) -> None:
    batch = _batch()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1.0)
    logits = forward(batch)
    module.token_loss(logits[:, :-1], batch["labels"][:, 1:])[0].backward()
    optimizer.step()


def test_activation_checkpointing_by_the_policy_gives_the_same_gradients():
    """What Lightning's FSDPStrategy does with ``activation_checkpointing_policy`` after wrapping, on the CPU."""
    plain, checkpointed = _lora_module(), _lora_module()
    _setup_activation_checkpointing(checkpointed, {"auto_wrap_policy": CheckpointedBlocks()})
    assert sum(isinstance(m, CheckpointWrapper) for m in checkpointed.modules()) == 4
    _sgd_step(plain, plain)
    _sgd_step(checkpointed, checkpointed)
    after = checkpointed.state_dict()  # CheckpointWrapper's hooks drop its prefix from the keys
    assert sorted(after) == sorted(plain.state_dict())
    assert all(torch.equal(after[k], v) for k, v in plain.state_dict().items())


# --- FSDP itself, 2 processes on the CPU -----------------------------------------------------------------------
# Lightning's FSDPStrategy cannot run on the CPU: the Trainer refuses it ("The strategy `fsdp` requires a GPU
# accelerator, but received `accelerator='cpu'`"), it hands FSDP device_id=None there, for which torch raises
# "FSDP needs a non-CPU accelerator device", and its full-state-dict context (offload_to_cpu=True) crashes the
# process on CPU-only FSDP. torch's FullyShardedDataParallel itself runs on gloo given device_id=cpu, so the
# policies are exercised there with the arguments Lightning passes (use_orig_params, the same AC setup).


def _fsdp_worker(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    module = _lora_module()
    fsdp = FullyShardedDataParallel(module, auto_wrap_policy=TransformerBlocks(trainable_leaves=True),
                                    use_orig_params=True, device_id=torch.device("cpu"))
    _setup_activation_checkpointing(fsdp, {"auto_wrap_policy": CheckpointedBlocks()})
    units = Counter(type(m._fsdp_wrapped_module).__name__ for m in fsdp.modules()
                    if isinstance(m, FullyShardedDataParallel))
    _sgd_step(module, fsdp)  # every rank the same batch: the averaged gradient is the one-process gradient
    with FullyShardedDataParallel.state_dict_type(fsdp, StateDictType.FULL_STATE_DICT,
                                                  FullStateDictConfig(offload_to_cpu=False, rank0_only=True)):
        state = fsdp.state_dict()
    if rank == 0:
        checkpoint = {"state_dict": dict(state)}
        module.on_save_checkpoint(checkpoint)  # what Lightning's checkpoint connector calls on rank 0
        torch.save({"units": dict(units), "state": state, "checkpoint": sorted(checkpoint["state_dict"])}, out)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    mp.start_processes(_fsdp_worker, args=(2, str(folder / "store"), str(folder / "out.pt")), nprocs=2,
                       start_method="spawn")
    return torch.load(folder / "out.pt", weights_only=False)


@pytest.mark.slow
def test_fsdp_on_two_processes_shards_by_the_policy_and_matches_one_process(fsdp_run, tmp_path):
    # the root, the 4 GPT2Blocks (each now holding its CheckpointWrapper) and the 8 LoRA A/B layers
    assert fsdp_run["units"] == {"InstructionTuningModule": 1, "CheckpointWrapper": 4, "Linear": 8}
    one = _lora_module()
    _sgd_step(one, one)
    state = fsdp_run["state"]
    assert sorted(state) == sorted(one.state_dict())  # full state dict: plain names, every tensor
    assert all(torch.equal(state[k], v) for k, v in one.state_dict().items())
    # the full state dict loads into an unwrapped model, and its adapter exported from there loads back
    fresh = _lora_module()
    fresh.load_state_dict(state, strict=True)
    fresh.model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(_world_gpt2(), tmp_path)
    for name, tensor in fresh.model.state_dict().items():
        if "lora_" in name:
            assert torch.equal(loaded.state_dict()[name], tensor)


@pytest.mark.slow
def test_a_lora_checkpoint_under_fsdp_keeps_the_adapter(fsdp_run):
    lora = sorted(k for k in fsdp_run["state"] if "lora_" in k)
    assert len(lora) == 8 and fsdp_run["checkpoint"] == lora
