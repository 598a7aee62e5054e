"""``instructune lm-eval``: EleutherAI's lm-evaluation-harness on a tuned run, so a run is judged on the
community's benchmarks (and on task YAMLs of one's own) with the harness's own prompts and metrics,
next to the exact-match scores ``train`` and ``evaluate`` give.

The run is loaded with ``load_tuned`` (base + adapter, or the full model; ``merge`` folds a LoRA / IA3
adapter first; ``base`` scores the run's base model instead, for the before / after comparison) and
wrapped in lm-eval's ``HFLM``. The results go to ``<run>/lm_eval/<tasks>.json`` and never overwrite an
earlier file. lm-eval is an optional dependency: nothing here imports it until a harness run starts.

``world/lm_eval_tasks/`` holds the embedded world's tasks (``world_capitals``: multiple choice on the
capitals of ``world.facts.CAPITALS``; ``world_capitals_gen``: the same facts, generated), always on the
task path, so ``--tasks world_capitals`` works offline on the embedded default.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructune.data.records import DataError
from instructune.models.loading import ModelError
from instructune.world.benchmark import TASKS_DIR

RESULTS_DIR = "lm_eval"


# --- options and task names --------------------------------------------------------------------------

@dataclass
class HarnessOptions:
    """What ``instructune lm-eval`` passes on to ``lm_eval.simple_evaluate`` (see ``cli``)."""

    tasks: list[str]
    num_fewshot: int | None = None
    limit: int | float | None = None
    batch_size: int | str = 8
    include_path: list[Path] = field(default_factory=list)
    apply_chat_template: bool = False
    merge: bool = False
    base: bool = False
    device: str | None = None
    log_samples: bool = False


def options_from_args(args: Any) -> HarnessOptions:
    """The ``lm-eval`` sub-command's arguments, checked here so a bad value is a one-line error."""
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise DataError(f"--num-fewshot={args.num_fewshot}: give 0 or more examples")
    return HarnessOptions(tasks=parse_tasks(args.tasks), num_fewshot=args.num_fewshot,
                          limit=None if args.limit is None else parse_limit(args.limit),
                          batch_size=parse_batch_size(str(args.batch_size)), include_path=list(args.include_path),
                          apply_chat_template=args.apply_chat_template, merge=args.merge, base=args.base,
                          device=args.device, log_samples=args.log_samples)


def parse_tasks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise DataError("--tasks: give at least one task name (comma-separated), e.g. --tasks world_capitals")
    return names


def parse_limit(text: str) -> int | float:
    """lm-eval's ``limit``: a count of documents per task, or a fraction (< 1) of each task."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"--limit={text}: give a positive count of documents, or a fraction below 1")
    return int(value) if value >= 1 and value.is_integer() else value


def parse_batch_size(text: str) -> int | str:
    if text.isdigit() and int(text) > 0:
        return int(text)
    if text == "auto" or text.startswith("auto:"):
        return text
    raise DataError(f"--batch-size={text}: give a positive integer or 'auto'")


def task_paths(extra: list[Path]) -> list[Path]:
    """The world's tasks first, then the user's folders (lm-eval lets later folders override)."""
    for path in extra:
        if not path.is_dir():
            raise DataError(f"--include-path {path}: no such folder (it should hold lm-eval task YAML files)")
    return [TASKS_DIR, *extra]


def task_manager(names: list[str], include_path: list[Path]) -> tuple[Any, list[str]]:
    """lm-eval's ``TaskManager`` and the task names to run (glob patterns expanded). The built-in task
    index (thousands of YAML files, seconds to scan) is skipped when every name is a plain task of the
    include folders. An unknown name is a one-line error with the closest registered names."""
    from lm_eval.tasks import TaskManager

    paths = task_paths(include_path)
    local = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
    if set(names) <= set(local.all_subtasks):  # single tasks, no groups or tags that may name built-in tasks
        return local, names
    manager = TaskManager(include_path=[str(p) for p in paths])
    known = set(manager.all_tasks)
    resolved: list[str] = []
    for name in names:
        if name in known or (name.endswith(".yaml") and Path(name).is_file()):
            resolved.append(name)
        elif any(c in name for c in "*?[") and (matched := manager.match_tasks([name])):
            resolved.extend(matched)
        else:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `lm-eval ls tasks`"
            raise DataError(f"--tasks: unknown lm-eval task {name!r}{hint}")
    return manager, list(dict.fromkeys(resolved))


# --- the model -----------------------------------------------------------------------------------------

@dataclass
class HarnessModel:
    model: Any
    tokenizer: Any
    architecture: str
    description: dict[str, Any]


def load_for_harness(run: Path, merge: bool = False, base: bool = False) -> HarnessModel:
    """The run's model as the harness will see it, and a description of it for the results file.

    ``base``: the run's base model (the one its adapter or fine-tune started from) with the run's
    tokenizer, so a base / tuned pair differs in the weights only."""
    from instructune.models.strategies import STRATEGIES
    from instructune.run_folder import load_tuned, model_folder, resolve_base

    if merge and base:
        raise ModelError("--merge and --base exclude each other: --base scores the base model, which has no adapter")
    tuned = load_tuned(run)
    meta = tuned.meta
    description = {"run": str(run), "model_dir": str(model_folder(run)), "architecture": tuned.architecture,
                   "peft": meta.get("peft"), "adapter_only": meta.get("adapter_only"),
                   "base_model": meta.get("base_model"), "prompt_style": tuned.prompt_style.name,
                   "evaluated": "base" if base else "tuned", "merged": bool(meta.get("merged"))}
    model = tuned.model
    if base:
        from instructune.models.loading import load_model

        if not meta.get("base_model"):
            raise ModelError(f"{run}: this model folder records no base model (a merged model?); --base needs one")
        model = load_model(resolve_base(meta["base_model"], model_folder(run)), tuned.architecture).eval()
    elif merge:
        strategy = STRATEGIES.get(meta.get("peft", ""))
        if not meta.get("adapter_only"):
            raise ModelError(f"{run}: peft={meta.get('peft')} saved a full model; there is no adapter to --merge")
        if strategy is None or not strategy.mergeable:
            raise ModelError(f"{run}: peft={meta.get('peft')} cannot be merged into the base weights; drop --merge")
        model = model.merge_and_unload().eval()
        description["merged"] = True
    return HarnessModel(model, tuned.tokenizer, tuned.architecture, description)


def harness_lm(loaded: HarnessModel, batch_size: int | str, device: str | None) -> Any:
    """lm-eval's ``HFLM`` around the model instance, told the positions the model really has (less a
    prompt / prefix adapter's virtual tokens), so lm-eval cuts long contexts to fit. Virtual-token runs
    score log-likelihoods through peft's training forward, which is sound; their generation would go
    through ``PeftModel.generate``, which is broken for them (see ``virtual_token_decoding``): refused."""
    import torch
    from lm_eval.models.huggingface import HFLM

    from instructune.eval.virtual_token_decoding import uses_virtual_tokens
    from instructune.models.limits import positions_left

    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = loaded.model.to(device)
    left = positions_left(model)
    kwargs = {"tokenizer": loaded.tokenizer, "backend": loaded.architecture, "batch_size": batch_size,
              **({"max_length": left} if left is not None else {})}
    if not uses_virtual_tokens(model):
        return HFLM(pretrained=model, **kwargs)
    peft = loaded.description["peft"]

    class NoGenerationHFLM(HFLM):
        def generate_until(self, requests: Any, disable_tqdm: bool = False) -> list[str]:
            raise ModelError(f"peft={peft}: generation tasks need peft's generate, which is broken for virtual "
                             "tokens; run log-likelihood / multiple-choice tasks on this run")

    return NoGenerationHFLM(pretrained=model, **kwargs)


# --- running and storing -------------------------------------------------------------------------------

def _versions() -> dict[str, Any]:
    from importlib import metadata

    from instructune.versions import package_versions

    return {**package_versions(), "lm_eval": metadata.version("lm_eval")}


def json_ready(value: Any) -> Any:
    """lm-eval's results dict with what JSON cannot hold (numpy scalars, functions in task configs,
    dtypes) turned into numbers and strings, the way lm-eval's own writer does."""
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(value, default=handle_non_serializable))


def results_path(run: Path, tasks: list[str], base: bool, merged: bool) -> Path:
    from instructune.run_folder import model_folder, unused_path

    folder = model_folder(run)
    folder = folder.parent if folder.name == "model" else folder  # a run's model/: results beside it
    stem = "+".join(Path(t).stem if t.endswith(".yaml") else t for t in tasks)
    stem = (stem[:80] + f"+{len(tasks)}tasks") if len(stem) > 100 else stem
    stem += "-base" if base else "-merged" if merged else ""
    return unused_path(folder / RESULTS_DIR / f"{stem}.json")


def headline(results: dict[str, Any]) -> list[str]:
    """One line per task / group: its first metric (the task's own order), its stderr and the count."""
    lines = []
    for name, scores in results.get("results", {}).items():
        metric = next((k for k in scores if "," in k and "_stderr" not in k), None)
        if metric is None:
            continue
        key, filt = metric.split(",", 1)
        stderr = scores.get(f"{key}_stderr,{filt}")
        n = results.get("n-samples", {}).get(name, {}).get("effective")
        tail = (f" ± {stderr:.4f}" if isinstance(stderr, float) else "") + (f" (n={n})" if n is not None else "")
        value = scores[metric]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{name}: {key}{'' if filt == 'none' else f' [{filt}]'} {shown}{tail}")
    return lines


def run_harness(run: Path, options: HarnessOptions) -> tuple[Path, dict[str, Any]]:
    """Run the harness on ``run`` and write ``<run>/lm_eval/<tasks>.json``: lm-eval's results dict, with
    the model's description, the options and the package versions under ``instructune`` (and the
    per-document samples in ``<tasks>.samples.jsonl`` with ``log_samples``)."""
    try:
        import lm_eval
    except ImportError:
        raise ModelError("instructune lm-eval needs EleutherAI's harness: pip install lm-eval") from None

    loaded = load_for_harness(run, merge=options.merge, base=options.base)  # a bad run folder fails first
    manager, tasks = task_manager(options.tasks, options.include_path)
    lm = harness_lm(loaded, options.batch_size, options.device)
    started = time.time()
    try:
        results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=options.num_fewshot,
                                          limit=options.limit, task_manager=manager,
                                          apply_chat_template=options.apply_chat_template,
                                          log_samples=options.log_samples)
    except ConnectionError as e:  # a hub dataset that is not in the local cache, offline or not
        raise DataError(f"--tasks {','.join(tasks)}: a task's dataset is not in the local datasets cache and could "
                        f"not be downloaded: {str(e).splitlines()[0]}") from None
    samples = results.pop("samples", None)
    ours = {"model": loaded.description,
            "options": {"tasks": tasks, "num_fewshot": options.num_fewshot, "limit": options.limit,
                        "batch_size": options.batch_size,
                        "include_path": [str(p) for p in task_paths(options.include_path)],
                        "apply_chat_template": options.apply_chat_template, "device": str(lm.device)},
            "seconds": round(time.time() - started, 2), "packages": _versions()}
    record = {"instructune": ours, **results}  # one key of its own: lm-eval's keys (its "versions") stay as they are
    out = results_path(run, tasks, options.base, ours["model"]["merged"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_ready(record), indent=2) + "\n")
    if samples is not None:
        lines = (json.dumps(json_ready({"task": task, **sample})) + "\n"
                 for task, rows in samples.items() for sample in rows)
        out.with_suffix(".samples.jsonl").write_text("".join(lines))
    return out, record
