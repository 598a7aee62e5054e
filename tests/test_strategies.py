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


# --- DoRA and the pass-through of peft config fields -------------------------------------------------


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from conftest import REPO
    from instructune.entry import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


def test_dora_on_the_world_gpt2_trains_and_merges_exactly():
    from instructune.world.source import ASSETS

    torch.manual_seed(0)
    model = STRATEGIES["lora"](r=8, dropout=0.0, use_dora=True).apply(load_model(str(ASSETS / "world-gpt2")), "causal")
    assert model.peft_config["default"].use_dora is True
    # world GPT-2: n_embd 128, 4 layers; peft's default target is c_attn (128 -> 384). LoRA r=8 per layer:
    # A 8x128 + B 384x8 = 4096; DoRA adds one magnitude per output feature of the adapted layer: 384.
    # 4 * (4096 + 384) = 17920
    assert count_parameters(model)[0] == 4 * (8 * 128 + 384 * 8 + 384) == 17920
    magnitudes = {n for n, _ in model.named_parameters() if "lora_magnitude_vector" in n}
    assert len(magnitudes) == 4
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _step(model, "causal")
    assert _changed(model, before) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert magnitudes <= _changed(model, before)
    model.eval()
    ids = _batch("causal")["input_ids"]
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        merged = model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_lora_options_reach_the_peft_config(tiny_dirs, tmp_path):
    from omegaconf import OmegaConf

    model = STRATEGIES["lora"](r=4, alpha=8, use_rslora=True).apply(load_model(str(tiny_dirs["gpt2"])), "causal")
    assert model.peft_config["default"].use_rslora is True
    # rsLoRA scales by alpha / sqrt(r) = 8 / 2 (plain LoRA: alpha / r = 2)
    assert model.base_model.model.transformer.h[0].attn.c_attn.scaling["default"] == 4.0
    # a list as Hydra passes it (ListConfig) reaches peft as a list: only layer 0 is adapted, A 16x4 + B 4x48,
    # and the adapter config can be written
    strategy = STRATEGIES["lora"](r=4, layers_to_transform=OmegaConf.create([0]))
    model = strategy.apply(load_model(str(tiny_dirs["gpt2"])), "causal")
    assert model.peft_config["default"].layers_to_transform == [0]
    assert type(strategy.options["layers_to_transform"]) is list
    assert count_parameters(model)[0] == 16 * 4 + 4 * 48
    model.save_pretrained(tmp_path)
    assert '"layers_to_transform": [\n    0\n  ]' in (tmp_path / "adapter_config.json").read_text()


def test_prompt_options_enable_text_initialisation(tiny_dirs):
    """peft's TEXT init needs prompt_tuning_init_text and tokenizer_name_or_path: both pass through."""
    base = load_model(str(tiny_dirs["gpt2"]))
    wte = base.transformer.wte.weight.detach().clone()
    strategy = STRATEGIES["prompt"](num_virtual_tokens=3, init="TEXT", prompt_tuning_init_text="the capital of",
                                    tokenizer_name_or_path=str(tiny_dirs["gpt2"]))
    model = strategy.apply(base, "causal")
    # the word tokenizer's ids: the 3, capital 4, of 5
    torch.testing.assert_close(model.prompt_encoder["default"].embedding.weight.detach(), wte[[3, 4, 5]],
                               atol=0, rtol=0)


LORA_FIELDS = "LoRA's fields (lr, base_quantization, r, alpha, dropout, target_modules)"


@pytest.mark.parametrize(("name", "key", "message"), [
    ("lora", "use_dorra", f"peft=lora: unknown key peft.use_dorra: in neither {LORA_FIELDS} nor peft's LoraConfig; "
                          "did you mean peft.use_dora or peft.use_bdlora or peft.use_rslora?"),
    ("lora", "rank", f"peft=lora: unknown key peft.rank: in neither {LORA_FIELDS} nor peft's LoraConfig"),
    ("ia3", "init_ia3_weight", "peft=ia3: unknown key peft.init_ia3_weight: in neither IA3's fields (lr, "
                               "base_quantization, target_modules, feedforward_modules) nor peft's IA3Config; "
                               "did you mean peft.init_ia3_weights?"),
    ("prefix", "num_layer", "peft=prefix: unknown key peft.num_layer: in neither Prefix's fields (lr, "
                            "base_quantization, num_virtual_tokens, prefix_projection, encoder_hidden_size) nor "
                            "peft's PrefixTuningConfig; did you mean peft.num_layers?"),
    ("lora", "lora_alpha", "peft=lora: set peft.alpha, not peft.lora_alpha "
                           "(instructune's name for LoraConfig.lora_alpha)"),
    ("lora", "lora_dropout", "peft=lora: set peft.dropout, not peft.lora_dropout "
                             "(instructune's name for LoraConfig.lora_dropout)"),
    ("prompt", "prompt_tuning_init", "peft=prompt: set peft.init, not peft.prompt_tuning_init "
                                     "(instructune's name for PromptTuningConfig.prompt_tuning_init)"),
    ("lora", "task_type", "peft=lora: peft.task_type cannot be set: instructune sets it from model.architecture"),
    ("ia3", "fan_in_fan_out", "peft=ia3: peft.fan_in_fan_out cannot be set: instructune sets it from the model's "
                              "layer type (true for GPT-2's Conv1D layers)"),
])
def test_bad_peft_options_are_one_line_errors(name, key, message):
    with pytest.raises(ModelError) as error:
        STRATEGIES[name](**{key: 1})
    assert str(error.value) == message


def test_options_pass_through_hydra_composition():
    from instructune.instantiate import build

    strategy = build(_compose("peft=lora", "+peft.use_dora=true", "+peft.use_rslora=true").peft, "peft")
    assert strategy.options == {"use_dora": True, "use_rslora": True}
    config = strategy.peft_config("causal", "gpt2")
    assert (config.use_dora, config.use_rslora, config.r, config.lora_alpha) == (True, True, 8, 16)
    dora = build(_compose("peft=dora").peft, "peft")
    assert (type(dora), dora.lr, dora.r, dora.options, dora.mergeable) == \
        (STRATEGIES["lora"], 1e-2, 8, {"use_dora": True}, True)
    qlora = build(_compose("peft=qlora").peft, "peft")
    assert (qlora.base_quantization, qlora.target_modules, qlora.r, qlora.alpha, qlora.dropout, qlora.lr) == \
        ("nf4", "all-linear", 64, 16, 0.1, 2e-4)
    with pytest.raises(ModelError, match=r"^peft=lora: unknown key peft\.use_dorra: .*did you mean peft\.use_dora"):
        build(_compose("peft=lora", "+peft.use_dorra=true").peft, "peft")
