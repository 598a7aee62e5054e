"""The GPU path's step-time choices, checked on the CPU: attention kernels, padded shapes, the last
partial batch, torch.compile (packed rows included), fused AdamW and the GPU trainer's tokens per step."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import compose_train_config, train_in_process
from instructune.batch import IGNORE_INDEX
from instructune.config_check import ConfigError
from instructune.data.collate import CausalCollator, PackedCausalCollator
from instructune.data.sampler import ExampleBatch, TrainBatchSampler
from instructune.data.tokenize import TokenizedExample
from instructune.models.loading import load_model
from instructune.models.module import InstructionTuningModule, OptimizerConfig
from instructune.speed import compile_options, configure_attention, runs_on_cuda, shape_choices

EOS = 0


def test_cuda_is_chosen_as_lightning_would():
    assert runs_on_cuda("gpu", cuda_available=False) and runs_on_cuda("cuda", cuda_available=False)
    assert runs_on_cuda("auto", cuda_available=True) and not runs_on_cuda("auto", cuda_available=False)
    assert not runs_on_cuda("cpu", cuda_available=True)


def test_shapes_default_to_few_on_cuda_and_unchanged_on_the_cpu():
    assert shape_choices(True, None, None) == shape_choices(True, 64, True)
    assert (shape_choices(True, None, None).pad_to_multiple_of, shape_choices(True, None, None).drop_last) == (64, True)
    assert (shape_choices(False, None, None).pad_to_multiple_of, shape_choices(False, None, None).drop_last) == (None, False)
    assert shape_choices(True, 1, False).pad_to_multiple_of is None  # 1: the user asked for no rounding
    assert shape_choices(False, 8, True).pad_to_multiple_of == 8 and shape_choices(False, 8, True).drop_last
    with pytest.raises(ConfigError, match="data.pad_to_multiple_of must be >= 1"):
        shape_choices(True, 0, None)


def test_cudnn_attention_is_switched_off_for_cuda_runs_only():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        assert configure_attention(False)["cudnn"] is True
        assert configure_attention(True) == {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                             "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                                             "cudnn": False, "math": torch.backends.cuda.math_sdp_enabled()}
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_compile_setting():
    assert compile_options(False) is None and compile_options(None) is None
    assert compile_options(True) == {} and compile_options({"mode": "max-autotune"}) == {"mode": "max-autotune"}
    with pytest.raises(ConfigError, match="trainer.compile must be true, false or a mapping"):
        compile_options("yes")


def test_drop_last_drops_only_a_partial_last_batch():
    kept = TrainBatchSampler([5] * 10, [1] * 10, batch_size=4, seed=0)
    dropped = TrainBatchSampler([5] * 10, [1] * 10, batch_size=4, seed=0, drop_last=True)
    assert [len(b) for b in kept] == [4, 4, 2] and len(kept) == 3
    assert [list(b) for b in dropped] == [list(b) for b in kept][:2] and len(dropped) == 2
    # the loss-token count of each window is that of the batches actually run
    assert [b.window_tokens for b in dropped] == [4, 4]
    exact = TrainBatchSampler([5] * 8, [1] * 8, batch_size=4, seed=0, drop_last=True)
    assert [len(b) for b in exact] == [4, 4] and len(exact) == 2
    alone = TrainBatchSampler([5] * 3, [1] * 3, batch_size=4, seed=0, drop_last=True)
    assert [len(b) for b in alone] == [3] and len(alone) == 1  # never an epoch without a step


def test_padding_to_a_multiple_keeps_labels_and_masks_exact():
    examples = [TokenizedExample([5, 6, 7, 8, EOS], 3), TokenizedExample([9, 10, EOS], 2)]
    batch = CausalCollator(pad_id=EOS, masking=True, pad_to_multiple_of=64)(examples)
    assert batch["input_ids"].shape == (2, 64)
    assert batch["labels"][0, :6].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 8, EOS, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"].sum(1).tolist() == [4, 2] and (batch["labels"][:, 4:] == IGNORE_INDEX).all()
    # never past the positions the model has left (data.max_seq_length): 70 of 128, a longer row unrounded
    long = [TokenizedExample(list(range(1, 67)) + [EOS], 3)]
    assert CausalCollator(pad_id=EOS, pad_to_multiple_of=64, max_width=70)(long)["input_ids"].shape == (1, 70)
    assert CausalCollator(pad_id=EOS, pad_to_multiple_of=64, max_width=60)(long)["input_ids"].shape == (1, 66)
    assert PackedCausalCollator(pad_id=EOS, pad_to_multiple_of=64, max_width=70)(long)["input_ids"].shape == (1, 70)


def test_compiled_training_matches_eager_on_packed_rows(tiny_dirs):
    """torch.compile (the aot_eager backend: the same graph capture as inductor, no C++ build) gives the
    eager loss and gradients on packed rows, whose block-diagonal mask comes from position ids; the state
    dict keeps its keys (no ``_orig_mod.``)."""
    torch.manual_seed(0)
    model = load_model(str(tiny_dirs["gpt2"]), "causal")
    module = InstructionTuningModule(model, "causal").eval()
    examples = ExampleBatch([TokenizedExample([5, 6, 7, 8, 9, EOS], 3), TokenizedExample([10, 11, EOS], 1),
                             TokenizedExample([12, 13, 14, EOS], 2)])
    examples.row_sizes = [2, 1]
    batch = PackedCausalCollator(pad_id=EOS, masking=True)(examples)
    keys = set(module.state_dict())

    def loss_and_grad():
        module.zero_grad(set_to_none=True)
        loss, _ = module.token_loss(module(batch), batch["labels"])
        loss.backward()
        return loss.detach(), model.transformer.wte.weight.grad.clone()

    eager_loss, eager_grad = loss_and_grad()
    module.compile_model(backend="aot_eager", fullgraph=False)
    compiled_loss, compiled_grad = loss_and_grad()
    assert compiled_loss.item() == pytest.approx(eager_loss.item(), abs=1e-6)
    assert torch.allclose(compiled_grad, eager_grad, atol=1e-6)
    assert set(module.state_dict()) == keys
    # FLOPs are counted on the plain model: the same count compiled or not
    from instructune.perf import step_flops

    compiled_flops = step_flops(module, batch)
    module._compiled = ()
    assert compiled_flops == step_flops(module, batch) > 0


@pytest.mark.parametrize("fused, expected", [(None, {"foreach": True, "fused": None}),
                                             (True, {"foreach": None, "fused": True})])
def test_fused_adamw_on_request_and_foreach_on_the_cpu_by_default(tiny_dirs, fused, expected):
    module = InstructionTuningModule(load_model(str(tiny_dirs["gpt2"]), "causal"), "causal",
                                     OptimizerConfig(lr=1e-3, fused=fused))
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    assert {k: optimizer.defaults[k] for k in ("foreach", "fused")} == expected


@pytest.mark.parametrize("overrides, accumulate", [((), 8), (("data.max_seq_length=1024",), 2),
                                                   (("data.batch_size=4", "data.max_seq_length=1024"), 8),
                                                   (("trainer.accumulate_grad_batches=3",), 3)])
def test_gpu_trainer_steps_hold_at_least_32k_positions(overrides, accumulate):
    cfg = compose_train_config("trainer=gpu", *overrides)
    assert cfg.trainer.accumulate_grad_batches == accumulate
    assert cfg.data.accumulate_grad_batches == accumulate  # the sampler counts loss tokens per the same window
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.compile is False
    if not any(o.startswith("trainer.accumulate") for o in overrides):
        assert cfg.data.batch_size * accumulate * cfg.data.max_seq_length >= 32768


@pytest.mark.slow
def test_a_compiled_packed_run_records_its_kernels(tmp_path):
    overrides = ["trainer.max_steps=6", "trainer.val_check_interval=6", "data.source.max_train_records=64",
                 "eval.max_examples=8", "eval.max_new_tokens=4", "logger=none", "eval.base=false", "export=false",
                 "data.packing=true", "data.batch_size=4", "data.pad_to_multiple_of=64", "data.drop_last=true",
                 "trainer.compile={backend:aot_eager}", f"hydra.run.dir={tmp_path}"]
    proc = train_in_process(*overrides)
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 6
    assert summary["kernels"] == {"device": "cpu", "attention": "sdpa", "sdpa_backends": None,
                                  "pad_to_multiple_of": 64, "drop_last": True, "compile": {"backend": "aot_eager"}}
    assert summary["metrics"]["val/loss"] > 0 and summary["throughput"]["real_tokens"] > 0


@pytest.mark.parametrize("overrides, message", [
    (["trainer=fsdp", "eval.every_n_steps=5"], "eval.every_n_steps with FSDPStrategy: generating or restoring"),
    (["trainer=fsdp", "eval.budgets=[5]"], "eval.budgets with FSDPStrategy"),
    (["trainer=deepspeed_zero3", "eval.every_n_steps=5"], "eval.every_n_steps with DeepSpeedStrategy"),
    (["trainer=deepspeed_zero3"], "DeepSpeedStrategy ZeRO-3: the trained weights are not gathered"),
])
def test_what_parameter_sharding_cannot_do_is_refused_before_loading(overrides, message):
    from instructune.sharded import check_sharding

    with pytest.raises(ConfigError, match=message):
        check_sharding(compose_train_config(*overrides))


@pytest.mark.parametrize("overrides", [["trainer=fsdp"], ["trainer=deepspeed"], ["trainer=ddp", "eval.budgets=[5]"],
                                       ["trainer=deepspeed_zero3", "eval.tuned=false", "export=false"]])
def test_what_sharding_can_do_passes(overrides):
    from instructune.sharded import check_sharding

    check_sharding(compose_train_config(*overrides))  # ZeRO-2 holds the whole model on every rank: nothing refused
