"""Load instruction records from files or the hub, validate every field, and split them.

Local JSON, JSON Lines and CSV files are parsed in ``data/files.py``; Parquet files, dataset folders
and hub names go through ``datasets.load_dataset``, and what it raises from deep inside is turned into
one line that names the file, the record and the field (``DataError``).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from instructune.data.conversations import MessageFields

log = logging.getLogger(__name__)

Record = dict[str, str]
Splits = dict[str, list[Record]]
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation",
                  "dev": "validation", "test": "test"}
_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    """Bad input data; the message names the source, the record index and the field."""


class RecordSource(Protocol):
    """Anything that yields validated records per split (``train``, ``validation``, ``test``)."""

    def load(self) -> Splits: ...


@dataclass(frozen=True)
class FieldMap:
    """Which column holds each field (e.g. Dolly: input=context, output=response). ``input`` and
    ``task`` may be None when the source has no such column."""

    instruction: str = "instruction"
    input: str | None = "input"
    output: str = "output"
    task: str | None = None
    group: str | None = None  # an evaluation group of its own (the world's "paraphrase" items)


@dataclass(frozen=True)
class SplitFractions:
    """Fractions for a seeded split when the source has no splits of its own (LLMs-from-scratch ch. 7)."""

    train: float = 0.85
    validation: float = 0.10
    test: float = 0.05

    def __post_init__(self) -> None:
        values = (self.train, self.validation, self.test)
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
            raise DataError(f"split fractions must be non-negative and sum to 1, got {values}")


def validate_records(rows: Sequence[Mapping[str, Any]], fields: FieldMap, where: str, skip_invalid: bool = False) -> list[Record]:
    """Check every record's fields and normalise them to ``instruction/input/output[/task]`` strings.

    Invalid records raise ``DataError`` (or, with ``skip_invalid``, are dropped and counted in the log).
    """
    columns = set().union(*(r.keys() for r in rows)) if len(rows) else set()
    for role in ("instruction", "input", "output", "task", "group"):
        column = getattr(fields, role)
        if column is not None and len(rows) and column not in columns:
            raise DataError(
                f"{where}: field mapping {role}={column!r} names a column the data does not have "
                f"(columns: {', '.join(sorted(columns))})"
            )
    return validate_rows(rows, lambda row, i: _validate_one(row, fields, where, i), where, skip_invalid)


def validate_rows(rows: Sequence[Mapping[str, Any]], validate_one: Callable[[Mapping[str, Any], int], Any], where: str,
                  skip_invalid: bool = False, kind: str = "record") -> list[Any]:
    """``validate_one(row, index)`` over every row: its ``DataError`` stops the load, or with ``skip_invalid``
    drops the row (counted in the log, the first reason shown); a load that keeps no row is an error.
    Shared by instruction records and conversations."""
    out: list[Any] = []
    skipped: list[str] = []
    for i, row in enumerate(rows):
        try:
            out.append(validate_one(row, i))
        except DataError as e:
            if not skip_invalid:
                raise
            skipped.append(str(e))
    if skipped:
        log.warning("%s: skipped %d invalid %s(s); first: %s", where, len(skipped), kind, skipped[0])
    if rows and not out:
        raise DataError(f"{where}: no valid {kind} left after skipping {len(skipped)} invalid one(s)")
    return out


def _validate_one(row: Mapping[str, Any], fields: FieldMap, where: str, i: int) -> Record:
    def text(role: str, required: bool) -> str:
        column = getattr(fields, role)
        if column is None:
            return ""
        value = row.get(column)
        if value is None:
            if required:
                raise DataError(f"{where}: record {i}: field {column!r} is missing or null")
            return ""
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, bool | int | float):  # JSON 5 / true, a Parquet number column
                hint = f" {json.dumps(value)}; write it as text: \"{json.dumps(value)}\""
            raise DataError(f"{where}: record {i}: field {column!r} must be a string, got {type(value).__name__}{hint}")
        if required and not value.strip():
            raise DataError(f"{where}: record {i}: field {column!r} is empty")
        return value

    record = {"instruction": text("instruction", True), "input": text("input", False), "output": text("output", True)}
    if fields.task is not None:
        record["task"] = text("task", False)
    if fields.group is not None and text("group", False):
        record["group"] = text("group", False)
    return record


def split_records(records: list[Record], fractions: SplitFractions, seed: int, where: str) -> Splits:
    """Seeded shuffle, then cut by fraction; every split with a non-zero fraction must be non-empty."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    n_train = int(n * fractions.train)
    n_test = int(n * fractions.test)
    splits = {
        "train": shuffled[:n_train],
        "test": shuffled[n_train : n_train + n_test],
        "validation": shuffled[n_train + n_test :],
    }
    for name in SPLITS:
        if getattr(fractions, name) > 0 and not splits[name]:
            raise DataError(
                f"{where}: {n} record(s) split {fractions.train}/{fractions.validation}/{fractions.test} "
                f"leaves the {name} split empty; use more data or other data.source.splits fractions"
            )
    return splits


@dataclass
class DatasetSource:
    """Records from a local file (JSON, JSONL, CSV, Parquet) or a Hugging Face dataset name.

    ``path`` is a file path or a hub name; ``subset`` is the hub configuration name. Sources with their
    own splits keep them (a missing validation/test split is carved from train); others are split
    with ``splits`` and ``seed``.

    ``max_train_records`` cuts the train split to its first N records *after* splitting, so validation
    and test are the same whatever N is: the knob for data-size studies. ``max_records`` truncates
    every split *before* splitting (quick runs on a slice of a large set): the test set changes with it.

    ``format``: ``instructions`` (the ``fields`` columns) or ``messages`` (chat records, where ``messages``
    says: ``data/conversations.py``).
    """

    path: str
    fields: FieldMap = field(default_factory=FieldMap)
    splits: SplitFractions = field(default_factory=SplitFractions)
    seed: int = 42
    subset: str | None = None
    max_records: int | None = None
    max_train_records: int | None = None
    skip_invalid: bool = False
    format: str = "instructions"
    messages: MessageFields | None = None

    def load(self) -> Splits:
        from instructune.data.conversations import (
            MessageFields,
            check_format,
            validate_conversations,
        )

        if check_format(self.format) == "messages":
            return self.load_with(lambda rows, where: validate_conversations(
                rows, self.messages or MessageFields(), where, self.skip_invalid))
        return self.load_with(lambda rows, where: validate_records(rows, self.fields, where, self.skip_invalid))

    def load_with(self, validate: Callable[[list[dict[str, Any]], str], list[Any]], kind: str = "") -> Splits:
        """Read the source, validate each of its splits with ``validate(rows, where)``, then cut and split
        as the class docstring says. Other record kinds (preference pairs) reuse it with their validator."""
        raw = self._load_raw()
        present = {(_SPLIT_ALIASES[k]): v for k, v in raw.items() if k in _SPLIT_ALIASES}
        if "train" not in present:
            raise DataError(f"{self.path}: no 'train' split (found: {', '.join(raw) or 'none'})")
        validated = {name: validate(rows, self._where(name, len(present))) for name, rows in present.items()}
        if self.max_records is not None:
            validated = {k: v[: self.max_records] for k, v in validated.items()}
        if len(validated) == 1:
            splits = split_records(validated["train"], self.splits, self.seed, self.path)
        else:
            splits = self._fill_missing(validated)
        if self.max_train_records is not None:  # after the split: validation and test do not move with it
            splits["train"] = splits["train"][: self.max_train_records]
        log.info("%s: %s%s", self.path, kind, ", ".join(f"{k}={len(v)}" for k, v in splits.items()))
        return splits

    def _where(self, split: str, n_splits: int) -> str:
        return self.path if n_splits == 1 else f"{self.path} [{split}]"

    def _fill_missing(self, splits: Splits) -> Splits:
        missing = [s for s in SPLITS if s not in splits]
        if not missing:
            return splits
        fractions = {s: getattr(self.splits, s) for s in missing}
        remaining = 1.0 - sum(fractions.values())
        carved = split_records(
            splits["train"],
            SplitFractions(
                train=remaining,
                validation=fractions.get("validation", 0.0),
                test=fractions.get("test", 0.0),
            ),
            self.seed,
            self.path,
        )
        return {"train": carved["train"], **{s: splits.get(s) or carved[s] for s in ("validation", "test")}}

    def _load_raw(self) -> dict[str, list[dict[str, Any]]]:
        import datasets

        from instructune.data.files import read_csv, read_json

        local = Path(self.path).expanduser()
        looks_local = local.suffix.lower() in _FORMATS or self.path.startswith((".", "/", "~"))
        if looks_local and not local.exists():
            raise DataError(f"{self.path}: no such file")
        try:
            if local.is_file():
                fmt = _FORMATS.get(local.suffix.lower())
                if fmt is None:
                    raise DataError(f"{self.path}: unknown file type {local.suffix!r}; use .json, .jsonl, .csv or .parquet")
                if fmt in ("json", "csv"):  # parsed in data/files.py: line numbers, CSV cells kept as text
                    return {"train": (read_json if fmt == "json" else read_csv)(local, self.path)}
                ds = datasets.load_dataset(fmt, data_files={"train": str(local)})
            else:
                ds = datasets.load_dataset(self.path, self.subset)
        except DataError:
            raise
        except UnicodeDecodeError as e:
            raise DataError(f"{self.path}: not valid UTF-8 (byte {e.start}): {e.reason}; save it as UTF-8") from None
        except Exception as e:  # noqa: BLE001 - datasets raises many types; one line is what the user needs
            raise DataError(f"{self.path}: could not be loaded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        return {name: split.to_list() for name, split in ds.items()}


@dataclass
class InlineSource:
    """Records given directly (tests, notebooks, generated worlds); validated like any other source."""

    splits_: Splits
    name: str = "<inline>"
    fields: FieldMap = field(default_factory=FieldMap)

    def load(self) -> Splits:
        return {k: validate_records(v, self.fields, f"{self.name} [{k}]") for k, v in self.splits_.items()}
