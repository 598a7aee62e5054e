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
    """One block of the table: a model on a data set, timed for ``steps`` after ``warmup`` steps, at
    ``batch_size`` examples (or packed rows) a step for every contender."""

    name: str
    model: str
    data: str
    max_length: int
    warmup: int
    steps: int
    batch_size: int = BATCH_SIZE


CPU_CASES = [
    Case("world-gpt2 x world data", "world-gpt2", "world", 256, 10, 100),
    # 256: the world GPT-2 has 256 positions (the HF recipe pads every example to max_length)
    Case("world-gpt2 x instruction-data.json", "world-gpt2", "instruction-data", 256, 5, 40),
    Case("gpt2-5m x world data", "gpt2-5m", "world", 256, 5, 40),
]
# The real gpt2 / gpt2-medium architectures (vocab 50257) fed by the world tokenizer (2048 ids: no hub
# tokenizer offline), so FLOPs per token are GPT-2's own. Batch: 32 (gpt2) and 16 (gpt2-medium) rows, what
# the HF recipe's every-row-padded-to-1024 batches fit with room on an 80 GB H100 (its logits alone,
# 32 x 1024 x 50257 in fp32, are 6.6 GB). 10 warm-up steps also absorb torch.compile's compilations.
GPU_CASES = [
    Case(f"{model} x instruction-data.json @{length}", model, "instruction-data", length, 10, 100, batch)
    for model, batch in (("gpt2", 32), ("gpt2-medium", 16)) for length in (512, 1024)
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
    batch_size: int = BATCH_SIZE


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
    else:  # gpt2 / gpt2-medium architecture from config (no download, vocab 50257), the world tokenizer's ids
        tokenizer = load_tokenizer(str(WORLD_GPT2))
        base = {"gpt2": {}, "gpt2-medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16}}[name]
        with torch.device(device):  # initialised where it trains: seconds, not a 355M-parameter CPU init
            model = GPT2LMHeadModel(GPT2Config(**base, eos_token_id=tokenizer.eos_token_id,
                                               bos_token_id=tokenizer.eos_token_id))
    return model.to(device), tokenizer


def pairs(records: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(Alpaca prompts, responses): the text the HF and TRL recipes tokenise themselves."""
    from instructune.data.prompts import make_prompt_style

    style = make_prompt_style("alpaca")
    return [style.format(r["instruction"], r.get("input", "")) for r in records], [r["output"] for r in records]


def instructune_data(records: list[dict[str, str]], tokenizer: Any, max_length: int, packing: bool = False,
                     batch_size: int = BATCH_SIZE, device: str = "cpu") -> Any:
    """instructune's data module (sampler + collator), set up: also the bare loop's batches. Batch shapes
    as ``train.py`` picks them for ``device`` (``instructune.speed.shape_choices``: on CUDA lengths
    rounded to a multiple of 64 and the last partial batch dropped; on the CPU neither)."""
    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.records import InlineSource
    from instructune.speed import shape_choices

    shapes = shape_choices(device == "cuda", None, None)
    data = InstructionDataModule(InlineSource({"train": records}), tokenizer, "alpaca", masking=True,
                                 max_seq_length=max_length, batch_size=batch_size, seed=0, packing=packing,
                                 pad_to_multiple_of=shapes.pad_to_multiple_of, drop_last=shapes.drop_last)
    data.setup("fit")
    return data


def job_data(job: Job, packing: bool = False) -> Any:
    """``instructune_data`` for a contender's job (its records, tokenizer, length, batch and device)."""
    return instructune_data(job.records, job.tokenizer, job.max_length, packing, job.batch_size, job.device)
