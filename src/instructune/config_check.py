"""Every numeric and enum setting checked right after Hydra composes the config, before a tokenizer,
a model or data is loaded: a bad value is one line naming the key, the value and what is allowed.

Why a table and not Hydra structured configs: the groups are ``_target_`` nodes whose keys are the
constructors' own arguments (any Trainer argument is a key); a schema per group would restate those
signatures. The table states only what a signature cannot (ranges, choices), and the constructors
still reject unknown keys (``train.build``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

_ABSENT = object()


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Rule:
    key: str
    ok: Callable[[Any], bool]
    allowed: str
    nullable: bool = False


def _int(low: int | None = None, high: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)
                      and (high is None or v <= high))


def _number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return (v > low if low_open else v >= low) and (high is None or (v < high if high_open else v <= high))

    return ok


def _choice(*options: Any) -> Callable[[Any], bool]:
    return lambda v: v in options


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _steps(v: Any) -> bool:
    return _int(1)(v) or v == -1


def _val_interval(v: Any) -> bool:  # Lightning: an int counts batches, a float is a fraction of an epoch
    return _int(1)(v) or (isinstance(v, float) and 0 < v <= 1)


def _devices(v: Any) -> bool:  # Lightning: a count, "auto", a list of ids, or "0,1"
    from omegaconf import ListConfig

    return _int(1)(v) or v == -1 or v == "auto" or isinstance(v, list | ListConfig) or (
        isinstance(v, str) and all(p.strip().isdigit() for p in v.split(",") if p.strip()))


def _limit(v: Any) -> bool:
    return _int(0)(v) or (isinstance(v, float) and 0 <= v <= 1)


PRECISIONS = ("32-true", "32", 32, "16-mixed", "16", 16, "bf16-mixed", "bf16", "bf16-true", "16-true", "64-true",
              "64", 64, "transformer-engine", "transformer-engine-float16")
DTYPES = ("float32", "float16", "bfloat16")
SPLITS = ("train", "validation", "test")

RULES: tuple[Rule, ...] = (
    Rule("seed", _int(0, 2**32 - 1), "an integer from 0 to 2**32-1"),
    Rule("masking", _bool, "true or false"),
    Rule("loss.prompt_weight", _number(0, 1), "a number in [0, 1] (0: masking=true, 1: masking=false), or null "
         "(what masking says)", nullable=True),
    Rule("export", _bool, "true or false"),
    Rule("model.architecture", _choice("causal", "seq2seq"), "causal or seq2seq"),
    Rule("model.dtype", _choice(*DTYPES), " or ".join(DTYPES), nullable=True),
    Rule("model.gradient_checkpointing", _bool, "true or false"),
    Rule("model.trust_remote_code", _bool, "true or false"),
    Rule("data.batch_size", _int(1), "an integer >= 1"),
    Rule("data.eval_batch_size", _int(1), "an integer >= 1", nullable=True),
    Rule("data.max_seq_length", _int(2), "an integer >= 2"),
    Rule("data.num_workers", _int(0), "an integer >= 0"),
    Rule("data.pad_to_multiple_of", _int(1), "an integer >= 1", nullable=True),
    Rule("data.group_by_length", _bool, "true or false"),
    Rule("data.packing", _bool, "true or false"),
    Rule("data.drop_last", _bool, "true or false (or null: true on CUDA)", nullable=True),
    Rule("data.cache", _bool, "true or false"),
    Rule("data.overlength", _choice("truncate", "drop", "error"), "truncate, drop or error"),
    Rule("data.mixture.by", _choice("task", "source"), "task or source (or null: no mixing)", nullable=True),
    Rule("data.mixture.cap", _int(1), "an integer >= 1 (or null: no cap)", nullable=True),
    Rule("data.mixture.temperature", _number(0, low_open=True), "a number > 0 (inf: equal shares)"),
    Rule("data.mixture.epoch_size", _int(1), "an integer >= 1 (or null: the default epoch)", nullable=True),
    Rule("data.balance", _choice("task"), "task (or null)", nullable=True),
    Rule("data.overlap.enabled", _bool, "true or false"),
    Rule("data.overlap.ngram", _int(1), "an integer >= 1"),
    Rule("data.overlap.threshold", _number(0, 1, low_open=True), "a number in (0, 1]"),
    Rule("data.overlap.num_perm", _int(16), "an integer >= 16"),
    Rule("data.decontaminate", _bool, "true or false"),
    Rule("data.source.splits.train", _number(0, 1), "a fraction in [0, 1]"),
    Rule("data.source.splits.validation", _number(0, 1), "a fraction in [0, 1]"),
    Rule("data.source.splits.test", _number(0, 1), "a fraction in [0, 1]"),
    Rule("data.source.max_records", _int(1), "an integer >= 1 (or null: every record)", nullable=True),
    Rule("data.source.max_train_records", _int(1), "an integer >= 1 (or null: every record)", nullable=True),
    Rule("data.source.max_items_per_task", _int(1), "an integer >= 1"),
    Rule("data.source.train_phrasings_per_item", _int(1), "an integer >= 1"),
    Rule("data.source.skip_invalid", _bool, "true or false"),
    Rule("checkpoint.every_n_epochs", _int(1), "an integer >= 1"),
    Rule("checkpoint.every_n_train_steps", _int(1), "an integer >= 1"),
    Rule("trainer.devices", _devices, "an integer >= 1, auto, or a list of device ids"),
    Rule("trainer.num_nodes", _int(1), "an integer >= 1"),
    Rule("trainer.max_steps", _steps, "an integer >= 1, or -1 (train for trainer.max_epochs)"),
    Rule("trainer.max_epochs", _steps, "an integer >= 1, or -1", nullable=True),
    Rule("trainer.accumulate_grad_batches", _int(1), "an integer >= 1"),
    Rule("trainer.val_check_interval", _val_interval, "an integer >= 1 (batches) or a fraction in (0, 1]",
         nullable=True),
    Rule("trainer.limit_val_batches", _limit, "an integer >= 0 or a fraction in [0, 1]"),
    Rule("trainer.gradient_clip_val", _number(0), "a number >= 0", nullable=True),
    Rule("trainer.log_every_n_steps", _int(1), "an integer >= 1"),
    Rule("trainer.num_sanity_val_steps", _int(-1), "an integer >= -1"),
    Rule("trainer.precision", _choice(*PRECISIONS), "one of 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, "
         "64-true (Lightning's precision names)"),
    Rule("optimizer.lr", _number(0, low_open=True), "a number > 0 (or null: the strategy's default)", nullable=True),
    Rule("optimizer.lr_scale", _number(0, low_open=True), "a number > 0"),
    Rule("optimizer.weight_decay", _number(0), "a number >= 0"),
    Rule("optimizer.warmup_ratio", _number(0, 1, high_open=True), "a number in [0, 1)"),
    Rule("optimizer.schedule", _choice("linear", "cosine", "constant"), "linear, cosine or constant"),
    Rule("optimizer.warmup_steps", _int(0), "an integer >= 0 (or null: optimizer.warmup_ratio)", nullable=True),
    Rule("optimizer.fused", _bool, "true or false (or null: fused on CUDA)", nullable=True),
    Rule("peft.lr", _number(0, low_open=True), "a number > 0", nullable=True),
    Rule("peft.r", _int(1), "an integer >= 1"),
    Rule("peft.alpha", _number(0, low_open=True), "a number > 0"),
    Rule("peft.dropout", _number(0, 1, high_open=True), "a number in [0, 1)"),
    Rule("peft.num_virtual_tokens", _int(1), "an integer >= 1"),
    Rule("peft.init", _choice("SAMPLE_VOCAB", "RANDOM", "TEXT"), "SAMPLE_VOCAB, RANDOM or TEXT"),
    Rule("eval.split", _choice(*SPLITS), "train, validation or test"),
    Rule("eval.base", _bool, "true or false"),
    Rule("eval.tuned", _bool, "true or false"),
    Rule("eval.max_new_tokens", _int(1), "an integer >= 1"),
    Rule("eval.batch_size", _int(1), "an integer >= 1"),
    Rule("eval.max_examples", _int(1), "an integer >= 1 (or null: the whole split)", nullable=True),
    Rule("eval.samples", _int(0), "an integer >= 0"),
    Rule("eval.selection_split", _choice(*SPLITS), "train, validation or test (or null: off)", nullable=True),
    Rule("eval.selection_max_examples", _int(1), "an integer >= 1 (or null: the whole split)", nullable=True),
    Rule("eval.every_n_steps", _int(1), "an integer >= 1 (or null: off)", nullable=True),
    Rule("eval.restore_best", _bool, "true or false"),
)


def check_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first setting outside its rule (keys a config lacks are skipped:
    not every strategy has ``peft.r``)."""
    from instructune.data.prompts import STYLE_NAMES

    missing = _missing(cfg)
    if missing:
        example = "data=json data.path=my.json" if missing[0] == "data.path" else f"{missing[0]}=<value>"
        raise ConfigError(f"{missing[0]}: required, and not given (e.g. {example})")
    rules = (*RULES, Rule("data.prompt.style", _choice(*STYLE_NAMES), " | ".join(STYLE_NAMES)))
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT or (value is None and rule.nullable):
            continue
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={_show(value)}: must be {rule.allowed}")
    trainer = cfg.get("trainer") or {}
    _check_strategy_installed(trainer.get("strategy"))
    if trainer.get("max_steps") == -1 and trainer.get("max_epochs") in (None, -1):
        raise ConfigError("trainer.max_steps=-1 with trainer.max_epochs="
                          f"{_show(trainer.get('max_epochs'))}: training would never end; set trainer.max_steps "
                          ">= 1 or trainer.max_epochs >= 1")


def _check_strategy_installed(strategy: Any) -> None:
    """DeepSpeed is an optional package: say so before a model is loaded (Lightning's own message
    comes only when the Trainer is built, after the model and the base evaluation)."""
    import importlib.util

    name = str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy or "")
    if "deepspeed" in name.lower() and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"trainer.strategy={name.rsplit('.', 1)[-1]}: the deepspeed package is not installed; "
                          "pip install deepspeed (on a CUDA machine), or use trainer=fsdp")


def _missing(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys left ``???``, found without resolving anything (``OmegaConf.missing_keys`` resolves the
    interpolations that point at them, and fails there)."""
    found = []
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            found.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(node, key) and isinstance(child := node._get_node(key), DictConfig):
            found += _missing(child, f"{prefix}{key}.")
    return sorted(k for k in found if not k.startswith("hydra"))


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def check_answer_room(max_new_tokens: int, positions: int | None, model_name: str) -> None:
    """Generation needs room for at least one prompt token next to the answer in a model with
    absolute positions (``positions``: what the model has, less virtual tokens)."""
    if positions is not None and max_new_tokens >= positions:
        raise ConfigError(f"eval.max_new_tokens={max_new_tokens}: model={model_name} has {positions} positions for "
                          f"prompt and answer together; set eval.max_new_tokens below {positions}")
