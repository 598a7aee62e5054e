"""Shared fixtures: a word-level tokenizer with known ids, and tiny causal / seq2seq / Llama models
written to a temporary folder (so loading-by-path is exercised exactly as with a hub download)."""

from __future__ import annotations

import os
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
