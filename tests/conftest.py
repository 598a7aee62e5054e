"""Shared fixtures: a word-level tokenizer with known ids, tiny causal / seq2seq / Llama models
written to a temporary folder (so loading-by-path is exercised exactly as with a hub download), and
``python train.py`` run inside the test process."""

from __future__ import annotations

import logging
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the token cache of the runs under test lives in a temporary folder, not the user's ~/.cache
os.environ.setdefault("INSTRUCTUNE_CACHE", tempfile.mkdtemp(prefix="instructune-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "instruction-data.json"

WORDS = ["<eos>", "<pad>", "<unk>", "the", "capital", "of", "france", "is", "paris", "what", "?", "say", "hi",
         "hello", "answer", ":", "q", "a", "x", "y", "z"]


def make_word_tokenizer(eos: str = "<eos>", pad: str = "<eos>"):
    """Whitespace word-level tokenizer: id of a word = its index in WORDS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, unk_token="<unk>")


@pytest.fixture
def word_tokenizer():
    return make_word_tokenizer()


def _tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                       eos_token_id=0, pad_token_id=1, bos_token_id=0)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny GPT-2, T5 and Llama models with the word tokenizer, saved as Hugging Face folders."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                      eos_token_id=0, bos_token_id=0, pad_token_id=0))
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                             num_decoder_layers=2, num_heads=2, eos_token_id=0, pad_token_id=1,
                                             decoder_start_token_id=1))
    llama = LlamaForCausalLM(_tiny_llama_config())
    out = {}
    for name, model, pad in (("gpt2", gpt2, "<eos>"), ("t5", t5, "<pad>"), ("llama", llama, "<pad>")):
        folder = root / name
        model.save_pretrained(folder)
        make_word_tokenizer(pad=pad).save_pretrained(folder)
        out[name] = folder
    return out


def train_in_process(*overrides: str, capsys=None) -> subprocess.CompletedProcess:
    """``python train.py *overrides`` in this process: train.py's own Hydra entry point with ``sys.argv``
    patched, so the run folder (``.hydra/``, ``train.log``, summary, model) is exactly the CLI's, without
    a new interpreter's imports. Returns (exit status, stdout, stderr) like ``subprocess.run``: the
    streams are read from ``capsys`` when given (empty otherwise). Exit status 1 with ``error: ...`` on
    stderr is what the CLI prints for bad input. The environment and the root logger (pointed at the
    run's train.log by Hydra) are restored afterwards.

    Launches where the process boundary is the point (DDP, ``-m`` sweeps and their launchers, SIGKILL,
    the CLI's own exit status and stderr, secrets in a fresh environment) stay real subprocesses."""
    from hydra.core.global_hydra import GlobalHydra

    argv, environ = sys.argv, dict(os.environ)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sys.argv = [str(REPO / "train.py"), *overrides]
    code = 0
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
    out = capsys.readouterr() if capsys is not None else None
    return subprocess.CompletedProcess(["train.py", *overrides], code, out.out if out else "", out.err if out else "")


def compose_train_config(*overrides: str):
    """The config ``python train.py *overrides`` runs with, composed by Hydra's compose API."""
    from hydra import compose, initialize_config_module

    from instructune.entry import CONFIG_NAME, CONFIG_PATH, register_resolvers

    register_resolvers()
    with initialize_config_module(config_module=CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=list(overrides))


def untrained_val_loss(*overrides: str) -> float:
    """``val/loss`` of the configuration's model before any training step: the base with its strategy
    applied, on the same validation batches the run scores (the bar a tuned run must clear)."""
    import lightning as L
    from hydra.utils import instantiate

    from instructune.train import build_parts

    cfg = compose_train_config(*overrides)
    L.seed_everything(cfg.seed, verbose=False)
    parts = build_parts(cfg)  # the run's own tokenizer, data module and model
    model = parts.strategy.apply(parts.model, cfg.model.architecture)
    module = instantiate(cfg.module, model=model, optimizer=parts.optimizer)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    [metrics] = trainer.validate(module, datamodule=parts.data, verbose=False)
    return metrics["val/loss"]


def study_script(name: str):
    """``experiments/<name>/run.py`` imported as a module (the study scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_run", REPO / "experiments" / name / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
