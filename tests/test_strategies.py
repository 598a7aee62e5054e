"""Each strategy on a tiny causal and a tiny seq2seq model: exact trainable-parameter counts, and
after optimiser steps exactly the intended parameters changed."""

import pytest
import torch

from instructune.models.loading import ModelError, count_parameters, load_model
from instructune.models.module import InstructionTuningModule, OptimizerConfig
from instructune.models.strategies import STRATEGIES

# (strategy, params, architecture) -> trainable parameters (hand-derived below)
# GPT-2: vocab 21, n_embd 16, 2 layers, c_attn 16->48. T5: d_model 16, d_kv 8 x 2 heads, d_ff 32, 2+2 layers.
CASES = {
    # LoRA r=8 on GPT-2 c_attn: A 16x8 + B 8x48 per layer = 512 -> 1024
    ("lora", "causal"): 1024,
    # LoRA r=8 on T5 q, v (16->16) in 6 attention blocks (2 enc self, 2 dec self, 2 dec cross): 2*(8*16+8*16)*6
    ("lora", "seq2seq"): 3072,
    # IA3 on GPT-2: c_attn (48 out) + mlp.c_proj (feed-forward: 64 in) per layer = 112 -> 224
    ("ia3", "causal"): 224,
    # IA3 on T5: k, v (16 each) in 6 attention blocks + wo (feed-forward input 32) in 4 FFNs
    ("ia3", "seq2seq"): 6 * 32 + 4 * 32,
    # prompt tuning: 4 virtual tokens x 16; for seq2seq peft trains one prompt for the encoder and one for the decoder
    ("prompt", "causal"): 64,
    ("prompt", "seq2seq"): 128,
    # prefix tuning: 4 tokens x layers x 2 (k, v) x 16
    ("prefix", "causal"): 4 * 2 * 2 * 16,
    # peft sizes the T5 prefix by config.num_layers (2), the decoder depth it feeds
    ("prefix", "seq2seq"): 4 * 2 * 2 * 16,
}
PARAMS = {"lora": {"r": 8, "dropout": 0.0}, "ia3": {}, "prompt": {"num_virtual_tokens": 4, "init": "RANDOM"},
          "prefix": {"num_virtual_tokens": 4}}


def _batch(architecture):
    ids = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 1, 1]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 6, 7, 8, 0], [-100, 11, 12, 0, -100, -100]])
    if architecture == "seq2seq":
        labels = torch.tensor([[8, 0, -100], [11, 12, 0]])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "response_labels": labels}


def _step(model, architecture, lr=1e-2, steps=2):
    """Two AdamW steps without weight decay (only gradients move weights); two because LoRA's B starts
    at zero, so its A receives a gradient from the second step on."""
    module = InstructionTuningModule(model, architecture, OptimizerConfig(lr=lr))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = module.token_loss(module(_batch(architecture)), _batch(architecture)["labels"])
        loss.backward()
        opt.step()


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


@pytest.mark.parametrize("name,architecture", sorted(CASES))
def test_peft_strategies_train_exactly_their_parameters(tiny_dirs, name, architecture):
    folder = tiny_dirs["gpt2" if architecture == "causal" else "t5"]
    base = load_model(str(folder), architecture)
    _, base_total = count_parameters(base)
    model = STRATEGIES[name](**PARAMS[name]).apply(base, architecture)
    trainable, total = count_parameters(model)
    assert trainable == CASES[(name, architecture)]
    assert total == base_total + trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, architecture)
    changed = _changed(model, before)
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything(tiny_dirs):
    model = STRATEGIES["full"]().apply(load_model(str(tiny_dirs["gpt2"])), "causal")
    trainable, total = count_parameters(model)
    # 21*16 wte (tied lm head) + 64*16 wpe + 2 layers * (2 LN 64 + c_attn 816 + c_proj 272 + c_fc 1088 + mlp proj 1040) + final LN 32
    assert trainable == total == 336 + 1024 + 2 * (64 + 816 + 272 + 1088 + 1040) + 32
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, "causal")
    # every parameter tensor receives a gradient and moves
    assert _changed(model, before) == set(before)


def test_bitfit_trains_only_biases(tiny_dirs):
    model = STRATEGIES["bitfit"]().apply(load_model(str(tiny_dirs["gpt2"])), "causal")
    trainable, _ = count_parameters(model)
    # per layer: ln_1 16 + c_attn 48 + c_proj 16 + ln_2 16 + c_fc 64 + mlp c_proj 16 = 176; final ln_f 16
    assert trainable == 2 * 176 + 16
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, "causal")
    assert _changed(model, before) == {n for n in before if n.endswith(".bias")}


@pytest.mark.parametrize("kind,architecture", [("llama", "causal"), ("t5", "seq2seq")])
def test_bitfit_refuses_bias_free_models(tiny_dirs, kind, architecture):
    with pytest.raises(ModelError, match=r"bitfit needs bias terms.*has none.*peft=ia3 or peft=lora"):
        STRATEGIES["bitfit"]().apply(load_model(str(tiny_dirs[kind]), architecture), architecture)


def test_llama_lora_uses_peft_default_targets(tiny_dirs):
    model = STRATEGIES["lora"](r=4).apply(load_model(str(tiny_dirs["llama"])), "causal")
    # q_proj and v_proj (16 -> 16) in 2 layers: 2 * 2 * (4*16 + 4*16)
    assert count_parameters(model)[0] == 512


def test_zero_virtual_tokens_is_a_clear_error(tiny_dirs):
    with pytest.raises(ModelError, match="num_virtual_tokens >= 1"):
        STRATEGIES["prompt"](num_virtual_tokens=0).apply(load_model(str(tiny_dirs["gpt2"])), "causal")


def test_loading_errors(tiny_dirs, tmp_path):
    (tmp_path / "config.json").write_text((tiny_dirs["gpt2"] / "config.json").read_text())
    with pytest.raises(ModelError, match="config.json but no weights"):
        load_model(str(tmp_path))
    with pytest.raises(ModelError, match="a t5 model is seq2seq, but model.architecture=causal"):
        load_model(str(tiny_dirs["t5"]), "causal")


@pytest.mark.parametrize("name", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_dirs, name):
    grads, trainable = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        base = load_model(str(tiny_dirs["gpt2"]))
        strategy = STRATEGIES[name](**({"dropout": 0.0} if name == "lora" else {}))
        if checkpointing:
            strategy.enable_gradient_checkpointing(base)
        model = strategy.apply(base, "causal")
        model.train()
        module = InstructionTuningModule(model, "causal")
        loss, _ = module.token_loss(module(_batch("causal")), _batch("causal")["labels"])
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        trainable.append({n for n, p in model.named_parameters() if p.requires_grad})
    # every trainable tensor gets a gradient either way: LoRA's A and B in 2 layers; all 28 tensors of
    # the tiny GPT-2 (wte, wpe, 12 per layer, ln_f's 2; the LM head is tied)
    assert set(grads[0]) == set(grads[1]) == trainable[0] == trainable[1]
    assert len(trainable[0]) == {"lora": 4, "full": 28}[name]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n])


def test_prefix_tuning_with_gradient_checkpointing_is_refused(tiny_dirs):
    with pytest.raises(ModelError, match="peft=prefix cannot be combined with gradient checkpointing"):
        STRATEGIES["prefix"]().enable_gradient_checkpointing(load_model(str(tiny_dirs["gpt2"])))


@pytest.mark.parametrize(("schedule", "expected"), [
    # 10 steps, warmup_ratio 0.2 -> 2 warm-up steps, then linear / cosine decay to 0 or constant
    ("linear", [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]),
    ("cosine", [0.0, 0.5, 1.0, 0.9619397662556434, 0.8535533905932737, 0.6913417161825449, 0.5,
                0.30865828381745514, 0.14644660940672627, 0.03806023374435663]),
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_learning_rate_schedules(tiny_dirs, schedule, expected):
    from types import SimpleNamespace

    module = InstructionTuningModule(load_model(str(tiny_dirs["gpt2"])), "causal",
                                     OptimizerConfig(lr=1.0, warmup_ratio=0.2, schedule=schedule))
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(expected, abs=1e-12)
