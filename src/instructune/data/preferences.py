"""Preference records for preference tuning (``stage=dpo``): a prompt with a ``chosen`` and a ``rejected``
answer, read from a file and normalised to instruction records that carry the rejected answer too:

    {"instruction": ..., "input": ..., "output": <chosen>, "rejected": <rejected>}

so the chosen answer is the reference that exact match scores against, and everything that reads
instruction records (prompt styles, ``SplitEvaluation``) reads these.

Fields are detected: ``chosen`` and ``rejected``; the prompt is ``prompt`` when the file has it (a plain
question, which the run's prompt style wraps like an instruction), else ``instruction`` with ``input`` when
present (the Alpaca layout of the LLMs-from-scratch preference-tuning chapter:
instruction / input / output / chosen / rejected; its ``output`` is not read). ``PreferenceFields`` names
other columns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from instructune.data.records import DataError, DatasetSource, Record, SplitFractions, Splits

log = logging.getLogger(__name__)

PROMPT_COLUMNS = ("prompt", "instruction")  # detected in this order: a whole prompt, or an instruction (+ input)


@dataclass(frozen=True)
class PreferenceFields:
    """Which column holds each part; None: detected (see the module docstring)."""

    prompt: str | None = None
    instruction: str | None = None
    input: str | None = None
    chosen: str | None = None
    rejected: str | None = None


@dataclass(frozen=True)
class ResolvedFields:
    instruction: str  # the prompt or instruction column
    input: str | None
    chosen: str
    rejected: str


def detect_fields(columns: set[str], fields: PreferenceFields, where: str) -> ResolvedFields:
    """The columns to read, from ``fields`` and what the data has; a named or needed column the data lacks
    is one error naming it and listing the columns there are."""
    have = ", ".join(sorted(columns)) or "none"

    def column(role: str, name: str | None) -> str:
        name = name or role
        if name not in columns:
            raise DataError(f"{where}: no {name!r} field (the {role} answer; columns: {have}): preference pairs need a "
                            f"chosen and a rejected answer per record; name the column with dpo.fields.{role}=<column>")
        return name

    given = fields.prompt or fields.instruction
    if given is not None and given not in columns:
        raise DataError(f"{where}: field mapping prompt={given!r} names a column the data does not have "
                        f"(columns: {have})")
    if fields.input is not None and fields.input not in columns:
        raise DataError(f"{where}: field mapping input={fields.input!r} names a column the data does not have "
                        f"(columns: {have})")
    prompt = given or next((c for c in PROMPT_COLUMNS if c in columns), None)
    if prompt is None:
        raise DataError(f"{where}: no prompt field: expected 'prompt' or 'instruction' (columns: {have}); "
                        "name it with dpo.fields.prompt=<column>")
    uses_input = prompt != PROMPT_COLUMNS[0] or fields.input is not None  # a whole prompt has no separate input
    inp = fields.input or ("input" if uses_input and "input" in columns else None)
    return ResolvedFields(prompt, inp, column("chosen", fields.chosen), column("rejected", fields.rejected))


def preference_records(rows: Sequence[Mapping[str, Any]], fields: PreferenceFields, where: str) -> list[Record]:
    """Every row checked (a missing, null, non-text or empty field is an error naming the record and the
    field) and normalised to an instruction record with ``rejected``."""
    columns: set[str] = set().union(*(r.keys() for r in rows)) if rows else set()
    resolved = detect_fields(columns, fields, where)
    out = []
    for i, row in enumerate(rows):
        record = {"instruction": _text(row, resolved.instruction, where, i),
                  "input": _text(row, resolved.input, where, i, required=False) if resolved.input else "",
                  "output": _text(row, resolved.chosen, where, i), "rejected": _text(row, resolved.rejected, where, i)}
        if record["output"].strip() == record["rejected"].strip():
            log.warning("%s: record %d: chosen and rejected are the same text (the pair teaches nothing)", where, i)
        out.append(record)
    return out


def _text(row: Mapping[str, Any], column: str, where: str, i: int, required: bool = True) -> str:
    value = row.get(column)
    if value is None:
        if required:
            raise DataError(f"{where}: record {i}: field {column!r} is missing or null")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: record {i}: field {column!r} must be a string, got {type(value).__name__} "
                        f"{json.dumps(value)[:40]}")
    if required and not value.strip():
        raise DataError(f"{where}: record {i}: field {column!r} is empty")
    return value


@dataclass
class PreferenceFileSource:
    """Preference records from a local file (JSON, JSONL, CSV, Parquet) or a hub dataset, read exactly as
    ``DatasetSource`` reads instruction files (same parsers, same one-line errors) and split the same
    way: a source with one split gets the seeded ``splits`` fractions, one with its own splits keeps them
    (missing validation / test carved from train). ``max_records`` / ``max_train_records`` as there."""

    path: str
    fields: PreferenceFields = field(default_factory=PreferenceFields)
    splits: SplitFractions = field(default_factory=SplitFractions)
    seed: int = 42
    subset: str | None = None
    max_records: int | None = None
    max_train_records: int | None = None
    preference_pairs: ClassVar[bool] = True  # records carry ``rejected`` (what stage=dpo checks for)

    def load(self) -> Splits:
        source = DatasetSource(self.path, splits=self.splits, seed=self.seed, subset=self.subset,
                               max_records=self.max_records, max_train_records=self.max_train_records)
        return source.load_with(lambda rows, where: preference_records(rows, self.fields, where), "preference pairs ")


__all__ = ["PreferenceFields", "ResolvedFields", "detect_fields", "preference_records", "PreferenceFileSource"]
