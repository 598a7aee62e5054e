"""``instructune export <run> --format hf|onnx``: a tuned run as a model other tools load, written
inside the run folder (``<run>/export/hf``, ``<run>/export/onnx``; a second export goes to ``hf-2``,
``onnx-2`` ... so nothing earlier is overwritten), each with a model card (``model_card``).

- ``hf``: LoRA / IA3 adapters merged into the base weights (``merge_and_unload``), full and BitFit
  runs saved as trained; safetensors, config.json, generation_config.json whose eos / pad ids are the
  tokenizer's (a generic ``generate`` then stops where instructune's does), the tokenizer with its own
  chat template, and prompt_style.json + instructune.json so ``instructune generate`` reads it too.
- ``onnx``: the same weights through ``torch.onnx.export`` (the dynamo exporter), with dynamic batch
  and sequence axes: ``input_ids, attention_mask -> logits`` (causal) and ``input_ids,
  attention_mask, decoder_input_ids -> logits`` (seq2seq), without a KV cache (every step re-reads the
  whole sequence). The export is checked under onnxruntime against PyTorch on two batch shapes before
  it is kept. optimum is not used: its ONNX exporter pins transformers < 4.58.

Prefix and prompt tuning train virtual tokens that peft places before the prompt at run time; no
weights of the model hold them, so neither format can carry them and both refuse.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instructune.model_card import ExportFacts, write_card
from instructune.models.loading import ModelError
from instructune.run_folder import (
    META_FILE,
    MODEL_DIR,
    TunedModel,
    generation_meta,
    load_tuned,
    model_folder,
    save_model_folder,
    unused_path,
)

FORMATS = ("hf", "onnx")
EXPORT_DIR = "export"
ONNX_FILE = "model.onnx"
ONNX_TOLERANCE = 1e-3  # max |logit difference| between onnxruntime and PyTorch that an export may have
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx's dynamo exporter needs the first two
CHECK_SHAPES = ((2, 8), (3, 13))  # (batch, sequence) of the parity check: two shapes prove the dynamic axes
_EXTERNAL_DATA_BYTES = 1 << 30  # above this the weights go to model.onnx.data (protobuf stops at 2 GiB)


@dataclass(frozen=True)
class Export:
    folder: Path
    wanted: Path  # the default folder; ``folder`` differs when an earlier export holds it
    max_abs_diff: float | None = None  # ONNX: the parity check's largest logit difference

    @property
    def message(self) -> str:
        kept = f" ({self.wanted} holds an earlier export, left as it is)" if self.folder != self.wanted else ""
        check = f"; onnxruntime logits within {self.max_abs_diff:.1e} of PyTorch" if self.max_abs_diff is not None else ""
        return f"export written to {self.folder}{kept}{check}"


def run_dir_of(folder: Path) -> Path:
    """The run folder of a model folder: its parent for a run's ``model/``, else the folder itself (a
    merged folder that ``instructune merge`` wrote)."""
    return folder.parent if folder.name == MODEL_DIR else folder


def check_exportable(meta: dict[str, Any], where: Path) -> None:
    """Refuse strategies whose training lives outside the weights (virtual tokens), before loading."""
    from instructune.models.strategies import STRATEGIES

    if not meta.get("adapter_only"):
        return
    strategy = STRATEGIES.get(meta.get("peft", ""))
    if strategy is None or not strategy.mergeable:
        why = ("adds virtual tokens that peft places before the prompt at run time, which cannot be merged into "
               "weights" if strategy and strategy.uses_virtual_tokens else "cannot be merged into the base weights")
        raise ModelError(f"{where}: peft={meta.get('peft')} {why}; export needs a weights-only model "
                         "(use the run folder itself with instructune generate)")


def plain_model(tuned: TunedModel) -> tuple[nn.Module, str]:
    """The tuned model as a plain transformers model, and how its weights came to be."""
    if not tuned.meta["adapter_only"]:
        return tuned.model, f"{tuned.meta['peft']} fine-tune, all weights saved as trained"
    return tuned.model.merge_and_unload(), f"{tuned.meta['peft']} adapter merged into the base weights"


def set_generation_ids(model: nn.Module, tokenizer: Any) -> None:
    """eos / pad ids of the generation config = the tokenizer's, as instructune's own ``generate`` uses:
    a generic loader (``model.generate``, vLLM) then stops at the end of the answer the model learnt."""
    gen = model.generation_config
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    if model.config.is_encoder_decoder and gen.decoder_start_token_id is None:
        gen.decoder_start_token_id = model.config.decoder_start_token_id


def write_hf(folder: Path, model: nn.Module, tuned: TunedModel) -> None:
    meta = {"base_model": None, "architecture": tuned.architecture, "peft": tuned.meta["peft"],
            "adapter_only": False, "merged": bool(tuned.meta["adapter_only"]), **generation_meta(tuned.meta)}
    save_model_folder(folder, model, tuned.tokenizer, tuned.prompt_style, meta)


class CausalLogits(nn.Module):
    """``input_ids, attention_mask -> logits``, no KV cache: the graph the ONNX file holds."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class Seq2SeqLogits(nn.Module):
    """``input_ids, attention_mask, decoder_input_ids -> logits``: encoder and decoder in one graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                          use_cache=False).logits


def logits_module(model: nn.Module) -> nn.Module:
    return Seq2SeqLogits(model) if model.config.is_encoder_decoder else CausalLogits(model)


def sample_inputs(model: nn.Module, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of one shape, the last row padded (mask 0) over its second half; seq2seq adds
    decoder ids of a different length than the encoder's, so both axes are exercised apart."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, length // 2 + 1:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.randint(0, vocab, (batch, max(1, length // 2)), generator=g)
    return inputs


def check_onnx_packages() -> None:
    missing = [name for name in ONNX_PACKAGES if find_spec(name) is None]
    if missing:
        raise ModelError(f"--format onnx needs {', '.join(missing)}: pip install onnx onnxscript onnxruntime")


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter warns about optional op libraries it cannot find (torchvision) and about axes
that several inputs share: noise for a user of the command."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # inputs sharing the batch / sequence axes: named once, as intended
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            yield
    finally:
        logger.setLevel(level)


def onnx_logits(path: Path, inputs: dict[str, torch.Tensor]) -> Any:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]


def write_onnx(folder: Path, model: nn.Module) -> float:
    """``folder/model.onnx`` of a plain transformers model; returns the parity check's largest |logit
    difference| and refuses an export above ``ONNX_TOLERANCE``."""
    # eager attention: the dynamo exporter cannot decompose T5's SDPA path (a view of a transposed
    # tensor); plain matmul + softmax exports for every architecture
    model.set_attn_implementation("eager")
    module = logits_module(model).eval()
    example = sample_inputs(model, *CHECK_SHAPES[0])
    dynamic = {name: {0: "batch", 1: "decoder_sequence" if name.startswith("decoder") else "sequence"}
               for name in example}
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > _EXTERNAL_DATA_BYTES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    with _quiet_exporter():
        torch.onnx.export(module, tuple(example.values()), str(path), input_names=list(example),
                          output_names=["logits"], dynamic_shapes=dynamic, dynamo=True, external_data=big,
                          verbose=False)
    worst = 0.0
    for i, shape in enumerate(CHECK_SHAPES):
        inputs = sample_inputs(model, *shape, seed=i)
        with torch.no_grad():
            expected = module(**inputs).numpy()
        worst = max(worst, float(abs(onnx_logits(path, inputs) - expected).max()))
    if worst > ONNX_TOLERANCE:
        raise ModelError(f"{path}: onnxruntime logits differ from PyTorch by up to {worst:.2e} "
                         f"(> {ONNX_TOLERANCE}); the export is not trustworthy")
    return worst


def write_onnx_folder(folder: Path, model: nn.Module, tuned: TunedModel) -> float:
    """The ONNX file with what a loader reads beside it: config, generation config, tokenizer, prompt style."""
    worst = write_onnx(folder, model)
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tuned.tokenizer.save_pretrained(folder)
    tuned.prompt_style.save(folder)
    return worst


def onnx_notes(architecture: str, worst: float) -> list[str]:
    inputs = "input_ids, attention_mask" + (", decoder_input_ids" if architecture == "seq2seq" else "")
    return [f"`{ONNX_FILE}`: inputs {inputs} (int64, dynamic batch and sequence axes) -> logits (float32).",
            ("No KV cache: each generation step runs the whole sequence again (simple and exact, slower for "
            "long answers)."),
            (f"Checked under onnxruntime (CPU) against PyTorch on batch shapes {', '.join(map(str, CHECK_SHAPES))}: "
            f"max |logit difference| {worst:.2e} (limit {ONNX_TOLERANCE})."),
            "Tokenizer, config.json, generation_config.json and prompt_style.json sit next to the ONNX file."]


def export_run(path: Path, fmt: str) -> Export:
    """Export the run at ``path`` (a run folder or its ``model/``) as ``fmt`` into ``<run>/export/<fmt>``."""
    if fmt not in FORMATS:
        raise ModelError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    source = model_folder(path)
    try:
        meta = json.loads((source / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{source / META_FILE}: unreadable ({e})") from None
    check_exportable(meta, Path(path))
    if fmt == "onnx":
        check_onnx_packages()
    tuned = load_tuned(source)
    model, weights = plain_model(tuned)
    model.eval()
    set_generation_ids(model, tuned.tokenizer)
    run_dir = run_dir_of(source)
    wanted = run_dir / EXPORT_DIR / fmt
    folder = unused_path(wanted)
    worst = None
    if fmt == "hf":
        write_hf(folder, model, tuned)
        notes = [("Weights in safetensors; generation_config.json carries the tokenizer's eos / pad ids, so "
                 "`generate` stops at the end of the answer."),
                 ("The tokenizer's own chat template is kept" if tuned.tokenizer.chat_template else
                  "The tokenizer has no chat template") + "; the model was tuned on the prompt style in "
                 "prompt_style.json, which `instructune generate` applies."]
        packages = ExportFacts.packages
    else:
        worst = write_onnx_folder(folder, model, tuned)
        notes = onnx_notes(tuned.architecture, worst)
        packages = (*ExportFacts.packages, *ONNX_PACKAGES)
    facts = ExportFacts(fmt, tuned.architecture, tuned.meta["peft"], weights, notes, packages)
    write_card(folder, run_dir, facts)
    return Export(folder, wanted, worst)


__all__ = [
    "CHECK_SHAPES",
    "FORMATS",
    "ONNX_FILE",
    "ONNX_TOLERANCE",
    "Export",
    "check_exportable",
    "export_run",
    "logits_module",
    "onnx_logits",
    "sample_inputs",
    "write_onnx",
]
