"""Read a local JSON, JSON Lines or CSV file into rows, with the line in every error.

Parsed here rather than by ``datasets``: its JSON reader reports no line numbers and fails on a
column of mixed types before any record could be named, and its CSV reader (pandas) turns a column
of numbers into ints or floats (``007`` → 7, ``1.50`` → 1.5). A CSV cell is text, so every value is
kept as the exact string in the file. A UTF-8 byte-order mark (Windows editors write one) is skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Any

from instructune.data.records import DataError

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def read_text(path: Path, shown: str) -> str:
    """The file as text: UTF-8, with or without a byte-order mark."""
    data = path.read_bytes()
    if data.startswith(_UTF16_BOMS):
        raise DataError(f"{shown}: the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark); "
                        "save it as UTF-8")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{shown}: not valid UTF-8 (byte {e.start + skip}): {e.reason}; save it as UTF-8") from None


def read_json(path: Path, shown: str) -> list[dict[str, Any]]:
    """A JSON array of objects or JSON Lines (one object a line)."""
    text = read_text(path, shown)
    stripped = text.strip()
    if not stripped:
        raise DataError(f"{shown}: the file is empty")
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{shown}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        if not data:
            raise DataError(f"{shown}: the JSON array is empty")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise DataError(f"{shown}: record {i}: expected an object, got {type(row).__name__}")
        return data
    if not stripped.startswith("{"):
        raise DataError(f"{shown}: expected a JSON array or JSON Lines of objects")
    _reject_one_object(stripped, shown)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{shown}: malformed JSON Lines at line {lineno}, column {e.colno}: {e.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{shown}: line {lineno}: expected an object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _reject_one_object(text: str, shown: str) -> None:
    """A file holding one JSON object (pretty-printed, or a wrapper such as ``{"data": [...]}``) is
    not JSON Lines; a single line holding one record is, and passes."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return  # several objects (JSON Lines) or malformed: the line-by-line reader names the line
    lists = [key for key, value in data.items()
             if isinstance(value, list) and value and all(isinstance(v, dict) for v in value)]
    if len(lists) == 1:
        key, n = lists[0], len(data[lists[0]])
        target = Path(shown).with_suffix(".records.json")
        raise DataError(
            f"{shown}: holds a JSON object whose {key!r} key holds {n} record(s), expected the list of "
            f"records itself (or JSON Lines); save that list to its own file and point data.path at it, e.g. "
            f"python -c \"import json; json.dump(json.load(open({shown!r}, encoding='utf-8-sig'))[{key!r}], "
            f"open({str(target)!r}, 'w'))\" then data.path={target}"
        )
    if "\n" in text:
        raise DataError(f"{shown}: holds a JSON object, expected a list of records (or JSON Lines: one "
                        "object a line); put the records in [ ... ] or write one record per line")


def read_csv(path: Path, shown: str) -> list[dict[str, Any]]:
    """Rows of a CSV file with a header row; every value the exact text of its cell (a row with fewer
    cells than the header gets None for the missing ones)."""
    reader = csv.reader(io.StringIO(read_text(path, shown), newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(name.strip() for name in header):
            raise DataError(f"{shown}: the CSV file has no header row (the column names)")
        columns = [name or f"Unnamed: {i}" for i, name in enumerate(header)]
        twice = sorted({name for name in columns if columns.count(name) > 1})
        if twice:
            raise DataError(f"{shown}: the header names column {twice[0]!r} more than once")
        rows = []
        for cells in reader:
            if not cells:
                continue
            if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns):]):
                raise DataError(f"{shown}: line {reader.line_num}: {len(cells)} values, but the header has "
                                f"{len(columns)} columns; quote values that contain a comma")
            rows.append({name: cells[i] if i < len(cells) else None for i, name in enumerate(columns)})
    except csv.Error as e:
        raise DataError(f"{shown}: malformed CSV at line {reader.line_num}: {e}") from None
    if not rows:
        raise DataError(f"{shown}: the CSV file has a header but no records")
    return rows
