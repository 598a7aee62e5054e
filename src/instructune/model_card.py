"""The model card (``README.md``) every export carries: YAML front matter a model hub reads, then what a
reader needs to judge the model: base, data, strategy, masking and λ, steps, the scores with their
intervals, the exact config and the package versions. Everything comes from the run folder
(``summary.json``, ``config.yaml``, ``predictions.jsonl``); a fact the folder does not hold is written
as "not recorded", never guessed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from instructune.bootstrap import Interval, arm_interval
from instructune.run_folder import ASSET_PREFIX, CONFIG_FILE, read_predictions, read_summary
from instructune.sweep_items import score

CARD_FILE = "README.md"
UNKNOWN = "not recorded"
# (label, summary.json key under eval.<who>, per-item kind for predictions.jsonl or None: corpus-level)
METRICS: tuple[tuple[str, str, str | None], ...] = (
    ("exact match", "all", "exact match"),
    ("ROUGE-L F1", "rougeL/all", "ROUGE-L"),
    ("chrF", "chrf/all", None),
)
_MODEL_INDEX_TYPES = {"all": "exact_match", "rougeL/all": "rouge", "chrf/all": "chrf"}
_HUB_MODEL = re.compile(r"[\w.-]+(/[\w.-]+)?")
_HUB_DATASET = re.compile(r"[\w.-]+/[\w.-]+")
_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")


@dataclass(frozen=True)
class ExportFacts:
    """What the export itself knows and the run folder does not."""

    format: str  # "hf" | "onnx"
    architecture: str  # "causal" | "seq2seq"
    peft: str
    weights: str  # how the weights came to be, e.g. "LoRA adapter merged into the base weights"
    notes: list[str] = field(default_factory=list)  # format-specific lines (ONNX inputs, parity check)
    packages: tuple[str, ...] = ("torch", "transformers", "peft", "safetensors", "instructune")


def fmt_pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def fmt_interval(interval: Interval) -> str:
    return f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def item_intervals(predictions: list[dict[str, Any]] | None) -> dict[tuple[str, str], Interval]:
    """(who, summary key) -> the 95% bootstrap interval of the per-item scores in predictions.jsonl
    (one seed, so the interval covers the sampling of test items only)."""
    out: dict[tuple[str, str], Interval] = {}
    for who in ("base", "tuned"):
        if not predictions or any(not isinstance(line.get(who), str) for line in predictions):
            continue
        for _, key, kind in METRICS:
            if kind is not None:
                out[who, key] = arm_interval([[score(line, who, kind) for line in predictions]])
    return out


def _cell(scores: dict[str, Any] | None, key: str, interval: Interval | None) -> str:
    if not scores or scores.get(key) is None:
        return "not evaluated"
    return fmt_pct(scores[key]) + (f" {fmt_interval(interval)}" if interval is not None else "")


def _hub_model(name_or_path: str | None) -> str | None:
    if not name_or_path or name_or_path.startswith((".", "/", "~")) or Path(name_or_path).expanduser().exists():
        return None
    return name_or_path if _HUB_MODEL.fullmatch(name_or_path) else None


def _hub_dataset(path: Any) -> str | None:
    if not isinstance(path, str) or path.endswith(_FILE_SUFFIXES) or Path(path).expanduser().exists():
        return None
    return path if _HUB_DATASET.fullmatch(path) else None


def _get(node: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _base_reference(name_or_path: str | None) -> str:
    """An embedded base as ``asset:<name>``, not this machine's absolute path to it."""
    from instructune.world.source import ASSETS

    if not name_or_path:
        return UNKNOWN
    local = Path(name_or_path).expanduser()
    if local.is_dir() and local.resolve().is_relative_to(ASSETS.resolve()):
        return ASSET_PREFIX + local.resolve().relative_to(ASSETS.resolve()).as_posix()
    return name_or_path


def _or_unknown(value: Any) -> Any:
    return UNKNOWN if value is None else value


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _embedded_license() -> str | None:
    """The embedded world models and data are instructune's own: they carry its licence."""
    try:
        meta = metadata.metadata("instructune")
    except metadata.PackageNotFoundError:
        return None
    return meta.get("License-Expression") or meta.get("License")


@dataclass
class RunFacts:
    """What the card reads from the run folder."""

    summary: dict[str, Any] | None
    config: dict[str, Any] | None
    config_text: str | None
    predictions: list[dict[str, Any]] | None

    @classmethod
    def read(cls, run_dir: Path) -> RunFacts:
        import yaml

        path = run_dir / CONFIG_FILE
        text = path.read_text() if path.is_file() else None
        config = yaml.safe_load(text) if text else None
        return cls(read_summary(run_dir), config if isinstance(config, dict) else None, text,
                   read_predictions(run_dir))

    def value(self, dotted: str) -> Any:
        return _get(self.config, dotted)


def front_matter(run: RunFacts, facts: ExportFacts) -> dict[str, Any]:
    """The hub's metadata keys; ``datasets`` and ``license`` only when known."""
    model_name = run.value("model.name")
    name_or_path = run.value("model.name_or_path")
    meta: dict[str, Any] = {
        "library_name": "transformers" if facts.format == "hf" else "onnx",
        "base_model": _hub_model(name_or_path) or model_name or UNKNOWN,
        "tags": ["instructune", "instruction-tuning", facts.peft, *(["onnx"] if facts.format == "onnx" else [])],
    }
    dataset = _hub_dataset(run.value("data.path"))
    if dataset:
        meta["datasets"] = [dataset]
    if _base_reference(name_or_path).startswith(ASSET_PREFIX) and (license_ := _embedded_license()) is not None:
        meta["license"] = license_
    meta["pipeline_tag"] = "text-generation" if facts.architecture == "causal" else "text2text-generation"
    tuned = _get(run.summary, "eval.tuned")
    if tuned:
        metrics = [{"type": _MODEL_INDEX_TYPES[key], "name": label, "value": tuned[key]}
                   for label, key, _ in METRICS if tuned.get(key) is not None]
        meta["model-index"] = [{"name": f"{model_name or 'model'}-{facts.peft}-{run.value('data.name') or 'data'}",
                                "results": [{"task": {"type": meta["pipeline_tag"]},
                                             "dataset": {"name": str(run.value("data.name") or UNKNOWN),
                                                         "type": str(run.value("data.name") or UNKNOWN),
                                                         "split": str(run.value("eval.split") or UNKNOWN)},
                                             "metrics": metrics}]}]
    return meta


def _strategy_line(run: RunFacts, facts: ExportFacts) -> str:
    options = {k: v for k, v in (run.value("peft") or {}).items() if k not in ("_target_", "lr")}
    shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items())
    return f"{facts.peft}" + (f" ({shown})" if shown else "") + f"; {facts.weights}"


def _lambda_line(run: RunFacts) -> str:
    masking = run.value("masking")
    resolved = _get(run.summary, "config.prompt_weight")
    set_to = run.value("loss.prompt_weight")
    if masking is None and resolved is None:
        return UNKNOWN
    how = "set" if set_to is not None else "null in the config, so decided by masking"
    return f"masking={str(masking).lower()}; loss.prompt_weight (λ) = {resolved} ({how})"


def summary_table(run: RunFacts, facts: ExportFacts) -> list[str]:
    s = run.summary or {}
    data = s.get("data")
    sizes = " / ".join(f"{k} {v}" for k, v in data.items()) if isinstance(data, dict) else UNKNOWN
    source = run.value("data.path") or run.value("data.source._target_") or UNKNOWN
    rows = [
        ("Base model", f"{run.value('model.name') or UNKNOWN} (`{_base_reference(run.value('model.name_or_path'))}`)"),
        ("Architecture", facts.architecture),
        ("Data", f"{run.value('data.name') or UNKNOWN} (source `{source}`; examples: {sizes})"),
        ("Prompt style", f"{run.value('data.prompt.style') or UNKNOWN} (saved as prompt_style.json)"),
        ("Strategy", _strategy_line(run, facts)),
        ("Loss masking", _lambda_line(run)),
        ("Steps", f"{s.get('steps', UNKNOWN)} (lr {s.get('lr', UNKNOWN)}, seed {_or_unknown(run.value('seed'))})"),
        ("Run status", str(s.get("status", UNKNOWN))),
    ]
    return ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]


def results_section(run: RunFacts) -> list[str]:
    base, tuned = _get(run.summary, "eval.base"), _get(run.summary, "eval.tuned")
    if not base and not tuned:
        return ["No scores recorded (summary.json has no eval results)."]
    n = (tuned or base or {}).get("n", UNKNOWN)
    intervals = item_intervals(run.predictions)
    lines = [(f"Split `{run.value('eval.split') or UNKNOWN}`, n = {n} items; greedy decoding, "
             f"at most {run.value('eval.max_new_tokens') or UNKNOWN} new tokens."), "",
             "| metric | base | tuned |", "| --- | --- | --- |"]
    for label, key, _ in METRICS:
        lines.append(f"| {label} | {_cell(base, key, intervals.get(('base', key)))} | "
                     f"{_cell(tuned, key, intervals.get(('tuned', key)))} |")
    lines += ["", ("Brackets: 95% bootstrap percentile interval over the test items (one training seed, so it "
              "covers item sampling only; 2000 resamples of the per-item scores in predictions.jsonl, "
              "`instructune.bootstrap.arm_interval`). chrF has no interval: it is a corpus-level statistic "
              "(character n-gram counts pooled over all items before one F-score), not a mean of per-item "
              "scores that an item bootstrap could resample.")]
    if not intervals:
        lines.append("No intervals: this folder has no predictions.jsonl with per-item answers.")
    return lines


def usage(run: RunFacts, facts: ExportFacts) -> list[str]:
    """How to prompt it: the model answers prompts in the style it was tuned on."""
    style = run.value("data.prompt.style") or UNKNOWN
    if facts.format == "hf":
        auto = "AutoModelForCausalLM" if facts.architecture == "causal" else "AutoModelForSeq2SeqLM"
        load = [f"from transformers import AutoTokenizer, {auto}", "",
                f"model = {auto}.from_pretrained(folder)", "tokenizer = AutoTokenizer.from_pretrained(folder)",
                "batch = tokenizer([prompt], return_tensors=\"pt\")",
                "answer = model.generate(**batch, max_new_tokens=64)  # stops at eos (generation_config.json)"]
    else:
        names = "input_ids, attention_mask" + (", decoder_input_ids" if facts.architecture == "seq2seq" else "")
        load = ["import onnxruntime", "from transformers import AutoTokenizer", "",
                "session = onnxruntime.InferenceSession(f\"{folder}/model.onnx\")",
                "tokenizer = AutoTokenizer.from_pretrained(folder)",
                f"logits = session.run([\"logits\"], {{...}})[0]  # feed {names} (int64 numpy arrays)"]
    return [f"The model was tuned on `{style}` prompts (prompt_style.json holds the exact template); give it "
            "prompts in that format, e.g. with `instructune.data.prompts.PromptStyle.load(folder).format(instruction, "
            "input)`" + (", or run `instructune generate <folder> \"instruction\"`." if facts.format == "hf" else "."),
            "", "```python", *load, "```"]


def _versions_table(versions: dict[str, Any]) -> list[str]:
    return ["| package | version |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in versions.items())]


def render(run_dir: Path, facts: ExportFacts) -> str:
    """The card's text for the run in ``run_dir``, exported as ``facts`` says."""
    import yaml

    run = RunFacts.read(run_dir)
    kind = "a Hugging Face model folder" if facts.format == "hf" else "an ONNX model"
    title = f"{run.value('model.name') or 'model'} tuned with {facts.peft} on {run.value('data.name') or 'data'}"
    lines = ["---", yaml.safe_dump(front_matter(run, facts), sort_keys=False).rstrip(), "---", "",
             f"# {title}", "",
             (f"An instruction-tuned {facts.architecture} language model, written by `instructune export "
             f"--format {facts.format}` as {kind}."), "", "## Summary", "", *summary_table(run, facts), "",
             "## Results", "", *results_section(run), ""]
    lines += ["## Use", "", *usage(run, facts), ""]
    if facts.notes:
        lines += ["## Files", "", *(f"- {note}" for note in facts.notes), ""]
    lines += ["## Config", "", f"The resolved config of the run ({CONFIG_FILE}), exactly:", ""]
    lines += ["```yaml", run.config_text.rstrip(), "```"] if run.config_text else [UNKNOWN]
    lines += ["", "## Package versions", "", "Training:", ""]
    versions = (run.summary or {}).get("versions")
    lines += _versions_table(versions) if isinstance(versions, dict) else [UNKNOWN]
    lines += ["", "Export:", "", *_versions_table({name: _version(name) for name in facts.packages}), ""]
    return "\n".join(lines)


def write_card(folder: Path, run_dir: Path, facts: ExportFacts) -> Path:
    path = folder / CARD_FILE
    path.write_text(render(run_dir, facts))
    return path


__all__ = [
    "CARD_FILE",
    "METRICS",
    "ExportFacts",
    "fmt_interval",
    "fmt_pct",
    "front_matter",
    "item_intervals",
    "render",
    "write_card",
]
