"""QLoRA's 4-bit base: every error a user can cause is one exact line raised before any weights load (on the
CPU), the bitsandbytes config is the QLoRA recipe, a k-bit base is prepared by peft before the adapters go
on; loading and training in 4 bits for real is checked where a CUDA GPU and bitsandbytes are."""

import importlib.util

import pytest
import torch
import transformers

from instructune.models import quantization
from instructune.models.loading import ModelError, count_parameters, load_model
from instructune.models.strategies import STRATEGIES, LoRA

NO_CUDA = ("peft=qlora needs a CUDA GPU: 4-bit bitsandbytes kernels (peft.base_quantization=nf4) are supported on "
           "CUDA only here, and torch sees no CUDA device; use peft=lora on this machine")


@pytest.fixture
def no_weights_loaded(monkeypatch):
    """Any attempt to read a model fails the test: the checks come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the check")

    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModelForSeq2SeqLM):
        monkeypatch.setattr(auto, "from_pretrained", refuse)
        monkeypatch.setattr(auto, "from_config", refuse)


@pytest.mark.parametrize(("installed", "cuda", "message"), [
    (None, True, "peft.base_quantization=nf4 (peft=qlora) needs bitsandbytes, which is not installed: "
                 "pip install 'instructune[qlora]'"),
    ("0.45.5", True, "peft.base_quantization=nf4 (peft=qlora) needs bitsandbytes>=0.46.1, found 0.45.5: "
                     "pip install -U 'instructune[qlora]'"),
    ("0.50.2", False, NO_CUDA),
])
def test_a_4bit_load_says_what_is_missing(tiny_dirs, monkeypatch, no_weights_loaded, installed, cuda, message):
    monkeypatch.setattr(quantization, "_bitsandbytes_version", lambda: installed)
    monkeypatch.setattr(quantization.torch.cuda, "is_available", lambda: cuda)
    for kind, architecture in (("gpt2", "causal"), ("t5", "seq2seq")):  # seq2seq bases quantize too
        with pytest.raises(ModelError) as error:
            load_model(str(tiny_dirs[kind]), architecture, quantization="nf4")
        assert str(error.value) == message


def test_a_from_config_model_cannot_be_quantized(no_weights_loaded):
    with pytest.raises(ModelError) as error:
        load_model(from_config={"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2}, quantization="nf4")
    assert str(error.value) == (
        "peft.base_quantization=nf4 quantizes pretrained weights as they load, and model.from_config builds random "
        "ones in memory: save that model with save_pretrained and set model.name_or_path to its folder, "
        "or use peft=lora")


def test_unknown_quantization_and_strategies_that_cannot_train_a_4bit_base(tiny_dirs, no_weights_loaded):
    unknown = "peft.base_quantization='int8': must be one of nf4, fp4 (bitsandbytes 4-bit) or null"
    with pytest.raises(ModelError) as error:
        load_model(str(tiny_dirs["gpt2"]), quantization="int8")
    assert str(error.value) == unknown
    with pytest.raises(ModelError) as error:
        LoRA(base_quantization="int8")
    assert str(error.value) == unknown
    for name in ("full", "bitfit"):
        with pytest.raises(ModelError) as error:
            STRATEGIES[name](base_quantization="nf4")
        assert str(error.value) == (f"peft={name} trains the base model's own weights, which a 4-bit base cannot "
                                    "update: peft.base_quantization is for adapter strategies (use peft=qlora)")
    assert {name: cls.supports_quantized_base for name, cls in STRATEGIES.items()} == {
        "full": False, "bitfit": False, "lora": True, "ia3": True, "prefix": True, "prompt": True}


def test_a_quantized_strategy_refuses_an_unquantized_base(tiny_dirs):
    with pytest.raises(ModelError) as error:
        LoRA(base_quantization="nf4").apply(load_model(str(tiny_dirs["gpt2"])), "causal")
    assert str(error.value) == ("peft.base_quantization=nf4, but the base model was loaded unquantized: load it with "
                                "load_model(..., quantization=strategy.base_quantization)")


def test_the_bitsandbytes_config_is_the_qlora_recipe(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    kwargs = quantization.quantized_load_kwargs("nf4", None)
    config = kwargs["quantization_config"]
    assert (config.load_in_4bit, config.load_in_8bit, config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant,
            config.bnb_4bit_compute_dtype) == (True, False, "nf4", True, torch.bfloat16)
    assert kwargs["device_map"] == {"": 0}
    monkeypatch.setenv("LOCAL_RANK", "3")  # a DDP process loads onto its own GPU
    kwargs = quantization.quantized_load_kwargs("fp4", torch.float16)
    assert (kwargs["quantization_config"].bnb_4bit_quant_type, kwargs["quantization_config"].bnb_4bit_compute_dtype,
            kwargs["device_map"]) == ("fp4", torch.float16, {"": 3})


def test_a_kbit_base_is_prepared_by_peft_before_the_adapters(tiny_dirs):
    """Stand-in on the CPU for a bitsandbytes base (the flag transformers sets after a k-bit load): peft's
    preparation upcasts the 16-bit weights the adapters train around to fp32; a plain base stays as loaded."""
    dtypes = {}
    for flagged in (False, True):
        base = load_model(str(tiny_dirs["gpt2"]), dtype="bfloat16")
        assert not quantization.is_quantized(base)
        if flagged:
            base.is_loaded_in_4bit = True
            assert quantization.is_quantized(base)
        model = LoRA(r=4, dropout=0.0).apply(base, "causal")
        dtypes[flagged] = {n.removeprefix("base_model.model."): p.dtype for n, p in model.named_parameters()
                           if not p.requires_grad}
        assert count_parameters(model)[0] == 2 * (16 * 4 + 4 * 48)
    assert set(dtypes[False].values()) == {torch.bfloat16}
    assert set(dtypes[True].values()) == {torch.float32}
    assert dtypes[False].keys() == dtypes[True].keys()


def _write_tiny_base(folder, architecture):
    """Widths that are multiples of bitsandbytes' 64-value quantization blocks."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    if architecture == "causal":
        config = AutoConfig.for_model("gpt2", vocab_size=64, n_positions=32, n_embd=64, n_layer=2, n_head=2)
        model = AutoModelForCausalLM.from_config(config)
    else:
        config = AutoConfig.for_model("t5", vocab_size=64, d_model=64, d_kv=32, d_ff=128, num_layers=2,
                                      num_decoder_layers=2, num_heads=2, decoder_start_token_id=0, pad_token_id=0)
        model = AutoModelForSeq2SeqLM.from_config(config)
    model.save_pretrained(folder)


@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
                    reason="QLoRA needs a CUDA GPU and bitsandbytes (pip install 'instructune[qlora]')")
@pytest.mark.parametrize(("architecture", "linear4bit", "trainable"), [
    # GPT-2, n_embd 64, 2 layers: c_attn 64->192, attn c_proj 64->64, c_fc 64->256, mlp c_proj 256->64 become
    # Linear4bit (the tied LM head stays); LoRA r=4 on all of them: 4 * (256 + 128 + 320 + 320) per layer
    ("causal", 8, 2 * 4 * (256 + 128 + 320 + 320)),
    # T5, d_model 64, 2 heads x d_kv 32, d_ff 128: q, k, v, o (64->64) in 2 encoder self-attention, 2 decoder self-
    # and 2 cross-attention blocks, wi (64->128) in 4 FFNs become Linear4bit; wo stays a float Linear (T5 keeps it in
    # fp32) and "all-linear" adapts it too. LoRA r=4: 24 * 4 * 128 + 4 * 4 * 192 (wi) + 4 * 4 * 192 (wo)
    ("seq2seq", 6 * 4 + 4, 24 * 4 * 128 + 4 * 4 * 192 * 2),
])
def test_qlora_trains_adapters_on_a_4bit_base(tmp_path, architecture, linear4bit, trainable):
    import bitsandbytes as bnb

    _write_tiny_base(tmp_path, architecture)
    base = load_model(str(tmp_path), architecture, quantization="nf4")
    layers = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == linear4bit
    assert {(m.weight.quant_type, m.weight.compress_statistics, m.compute_dtype) for m in layers} == \
        {("nf4", True, torch.bfloat16)}
    strategy = LoRA(r=4, alpha=16, dropout=0.0, base_quantization="nf4", target_modules="all-linear")
    strategy.enable_gradient_checkpointing(base)
    model = strategy.apply(base, architecture)
    model.train()
    assert count_parameters(model)[0] == trainable
    frozen_4bit = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}
    assert len(frozen_4bit) == linear4bit
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ids = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]], device="cuda")
    labels = ids if architecture == "causal" else torch.tensor([[8, 9, 1], [10, 1, -100]], device="cuda")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):  # two steps: LoRA's B starts at zero, so A moves from the second on
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):  # what precision=bf16-mixed does
            loss = model(input_ids=ids, labels=labels).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    moved = {n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())}
    assert moved == set(before)
    assert all(torch.equal(frozen_4bit[n], p) for n, p in model.named_parameters() if n in frozen_4bit)
