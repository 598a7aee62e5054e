"""The run folder, written and read in one place: what ``train`` leaves behind and what ``cli``,
``sweep_report`` and the studies read back.

    <run>/config.yaml          resolved config (config.resumed.yaml when a resumed run finds one)
    <run>/summary.json         status, config digest, versions, scores, throughput (summary.failed.json
                               when a resumed attempt fails over an earlier successful summary)
    <run>/predictions.jsonl    one line per evaluated example, base and tuned generations
    <run>/model/               adapter or full model + tokenizer + prompt style + instructune.json
    <run>/checkpoints/         last.ckpt (resume with ckpt_path=last)
    <run>/.hydra/              Hydra's composed config and the command-line overrides
    <sweep>/<n>_<overrides>/   one such run folder per job of a multirun
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instructune.env import redact

if TYPE_CHECKING:  # the readers of summaries (sweep reports) need neither torch nor transformers
    from torch import nn

    from instructune.data.prompts import PromptStyle

CONFIG_FILE = "config.yaml"
RESUMED_CONFIG_FILE = "config.resumed.yaml"
SUMMARY_FILE = "summary.json"
FAILED_SUMMARY_FILE = "summary.failed.json"
PREDICTIONS_FILE = "predictions.jsonl"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
META_FILE = "instructune.json"
JOB_CONFIG_FILE = ".hydra/config.yaml"  # what Hydra composed, interpolations unresolved


class RunFolder:
    """Writes one run's files. A run resumed in a folder that already holds a config or a summary
    keeps them until it succeeds: nothing an earlier attempt wrote is lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._had_config = (path / CONFIG_FILE).exists()
        self._had_summary = (path / SUMMARY_FILE).exists()

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_FILE

    def write_config(self, yaml_text: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        out = unused_path(self.path / RESUMED_CONFIG_FILE) if self._had_config else self.path / CONFIG_FILE
        out.write_text(redact(yaml_text))
        return out

    def write_summary(self, summary: dict[str, Any]) -> Path:
        failed_over_earlier = summary.get("status") != "ok" and self._had_summary
        out = self.path / (FAILED_SUMMARY_FILE if failed_over_earlier else SUMMARY_FILE)
        out.write_text(redact(json.dumps(summary, indent=2, default=str)) + "\n")
        return out

    def export(self, model: nn.Module, tokenizer: Any, prompt_style: PromptStyle, meta: dict[str, Any]) -> Path:
        """Hugging Face format (adapter only for peft strategies, else the whole model), the tokenizer,
        the prompt style and ``instructune.json`` (base model, architecture, strategy): all that
        ``load_tuned`` needs to answer an instruction exactly as the run was trained."""
        return save_model_folder(self.model_dir, model, tokenizer, prompt_style, meta)


def generation_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """What ``instructune generate`` needs to prompt a model as its run did (the data format and where
    generation stops), carried from a run's meta into a merged or exported copy."""
    return {k: meta[k] for k in ("format", "stop") if k in meta}


def save_model_folder(folder: Path, model: nn.Module, tokenizer: Any, prompt_style: PromptStyle,
                      meta: dict[str, Any]) -> Path:
    """A model folder ``load_tuned`` reads: a run's ``model/`` or a merged model. ``meta['base_model']``
    (of an adapter) is written as a portable reference (``base_reference``)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    prompt_style.save(folder)
    if meta.get("base_model"):
        meta = {**meta, "base_model": base_reference(meta["base_model"], folder)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def job_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides a run was launched with (Hydra's ``.hydra/overrides.yaml``), less
    Hydra's own settings: what distinguishes the jobs of a sweep."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.is_file() else []
    return [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a multirun, in job order (``0_...``, ``1_...``, ... ``10_...``)."""

    def order(p: Path) -> tuple[int, str]:
        head = p.name.split("_")[0]
        return (int(head) if head.isdigit() else 1 << 30, p.name)

    return sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=order)


def unused_path(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext`` ... when it exists: nothing earlier is overwritten."""
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return candidate


ASSET_PREFIX = "asset:"


def base_reference(name_or_path: str, model_dir: Path) -> str:
    """How ``instructune.json`` names the base model so that a copied run folder still loads: an
    embedded base by its asset name, a local folder relative to the model folder, a hub name as is."""
    import os

    from instructune.world.source import ASSETS

    local = Path(name_or_path).expanduser()
    if not local.is_dir():
        return name_or_path
    local = local.resolve()
    if local.is_relative_to(ASSETS.resolve()):
        return ASSET_PREFIX + local.relative_to(ASSETS.resolve()).as_posix()
    return os.path.relpath(local, model_dir.resolve())


def resolve_base(reference: str, model_dir: Path) -> str:
    """The inverse of ``base_reference`` (absolute paths written by older runs load as they are)."""
    from instructune.world.source import ASSETS

    if reference.startswith(ASSET_PREFIX):
        return str(ASSETS / reference.removeprefix(ASSET_PREFIX))
    relative = model_dir / reference
    return str(relative.resolve()) if not Path(reference).is_absolute() and relative.is_dir() else reference


def read_predictions(run_dir: Path) -> list[dict[str, Any]] | None:
    """A run's ``predictions.jsonl`` (one dict per evaluated example), or None when it has none."""
    path = run_dir / PREDICTIONS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else None


def read_job_config(run_dir: Path) -> dict[str, Any] | None:
    """The config Hydra composed for a run (``.hydra/config.yaml``, interpolations unresolved), or None."""
    import yaml

    path = run_dir / JOB_CONFIG_FILE
    config = yaml.safe_load(path.read_text()) if path.is_file() else None
    return config if isinstance(config, dict) else None


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``summary.json``, or None when the run never got far enough to write one."""
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class TunedModel:
    model: nn.Module
    tokenizer: Any
    prompt_style: PromptStyle
    architecture: str
    meta: dict[str, Any]


def model_folder(path: str | Path) -> Path:
    """Accept a run folder or its ``model/`` folder."""
    from instructune.models.loading import ModelError

    path = Path(path)
    for candidate in (path, path / MODEL_DIR):
        if (candidate / META_FILE).is_file():
            return candidate
    raise ModelError(f"{path}: no {META_FILE} here or in {path / MODEL_DIR}; is this an instructune run folder?")


def load_tuned(path: str | Path) -> TunedModel:
    """What ``export`` wrote, ready to generate: base + adapter, or the full model."""
    from instructune.data.prompts import PromptStyle
    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.models.loading import load_model

    folder = model_folder(path)
    meta = json.loads((folder / META_FILE).read_text())
    architecture = meta["architecture"]
    if meta["adapter_only"]:
        from peft import PeftModel

        base = load_model(resolve_base(meta["base_model"], folder), architecture)
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = load_model(str(folder), architecture)
    model.eval()
    return TunedModel(model, load_tokenizer(str(folder)), PromptStyle.load(folder), architecture, meta)
