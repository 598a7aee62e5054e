"""What every contender gets alike: the cases, the records, the model, the Alpaca prompt text and the
batch size, so that differences in the table come from the training stacks alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO.parent / "shared" / "data" / "instruction-data.json"
BATCH_SIZE = 4


class Case(NamedTuple):
    """One block of the table: a model on a data set, timed for ``steps`` after ``warmup`` steps."""

    name: str
    model: str
    data: str
    max_length: int
    warmup: int
    steps: int


CPU_CASES = [
    Case("world-gpt2 x world data", "world-gpt2", "world", 256, 10, 100),
    # 256: the world GPT-2 has 256 positions (the HF recipe pads every example to max_length)
    Case("world-gpt2 x instruction-data.json", "world-gpt2", "instruction-data", 256, 5, 40),
    Case("gpt2-5m x world data", "gpt2-5m", "world", 256, 5, 40),
]
GPU_CASES = [
    Case("gpt2 x instruction-data.json", "gpt2", "instruction-data", 512, 10, 100),
    Case("gpt2-medium x instruction-data.json", "gpt2-medium", "instruction-data", 512, 10, 100),
]


@dataclass
class Job:
    """Everything one worker's contender needs: the same for all of them within a case."""

    model: Any
    tokenizer: Any
    records: list[dict[str, str]]
    max_length: int
    warmup: int
    measured: int
    device: str
    precision: str


def records(data: str) -> list[dict[str, str]]:
    """The training split of ``world`` (embedded) or of the shared ``instruction-data.json``."""
    if data == "world":
        from instructune.world.source import WorldSource

        return WorldSource().load()["train"]
    if not SHARED_DATA.is_file():
        raise SystemExit(f"skip: {SHARED_DATA} is absent")
    from instructune.data.records import DatasetSource

    return DatasetSource(path=str(SHARED_DATA)).load()["train"]


def model_and_tokenizer(name: str, device: str) -> tuple[Any, Any]:
    """The case's model (seeded; built from config except the embedded world GPT-2, so nothing is
    downloaded) and the world tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.world.source import WORLD_GPT2

    torch.manual_seed(0)
    if name == "world-gpt2":
        model = AutoModelForCausalLM.from_pretrained(WORLD_GPT2)
        tokenizer = load_tokenizer(str(WORLD_GPT2))
    elif name == "gpt2-5m":  # ~5M parameters from config, the world tokenizer
        tokenizer = load_tokenizer(str(WORLD_GPT2))
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=256, n_layer=6,
                                           n_head=8, eos_token_id=tokenizer.eos_token_id,
                                           bos_token_id=tokenizer.eos_token_id, resid_pdrop=0.0, embd_pdrop=0.0,
                                           attn_pdrop=0.0))
    else:  # gpt2 / gpt2-medium architecture from config (no download), the world tokenizer's ids
        tokenizer = load_tokenizer(str(WORLD_GPT2))
        base = {"gpt2": {}, "gpt2-medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16}}[name]
        model = GPT2LMHeadModel(GPT2Config(**base, eos_token_id=tokenizer.eos_token_id,
                                           bos_token_id=tokenizer.eos_token_id))
    return model.to(device), tokenizer


def pairs(records: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(Alpaca prompts, responses): the text the HF and TRL recipes tokenise themselves."""
    from instructune.data.prompts import make_prompt_style

    style = make_prompt_style("alpaca")
    return [style.format(r["instruction"], r.get("input", "")) for r in records], [r["output"] for r in records]


def instructune_data(records: list[dict[str, str]], tokenizer: Any, max_length: int, packing: bool = False) -> Any:
    """instructune's data module (sampler + collator), set up: also the bare loop's batches."""
    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.records import InlineSource

    data = InstructionDataModule(InlineSource({"train": records}), tokenizer, "alpaca", masking=True,
                                 max_seq_length=max_length, batch_size=BATCH_SIZE, seed=0, packing=packing)
    data.setup("fit")
    return data
