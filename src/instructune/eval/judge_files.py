"""Where a judge's scores live in a run folder, and how they are read back (by a resumed judging and
by the sweep report, which must not need torch):

    <run>/judge/<name>.jsonl        one line per judged item, appended as it is scored
    <run>/judge/<name>.json         the summary: mean, 95% interval, n, unparsable, judge, rubric
    <run>/judge/<name>.base.*       the same for the base model's answers (``--answer base``)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from instructune.data.records import DataError

JUDGE_DIR = "judge"
ITEM_FIELDS = ("instruction", "input", "reference")  # with the line index: which test item a score is for


def safe_name(text: str) -> str:
    """A judge name usable as a file name (``llama3.1:8b`` -> ``llama3.1_8b``)."""
    name = re.sub(r"[^\w.-]+", "_", text).strip("._")
    return name or "judge"


def result_paths(run_dir: Path, name: str, answer: str) -> tuple[Path, Path]:
    """(per-item jsonl, summary json) of judge ``name`` scoring the ``answer`` column."""
    stem = name if answer == "tuned" else f"{name}.{answer}"
    folder = run_dir / JUDGE_DIR
    return folder / f"{stem}.jsonl", folder / f"{stem}.json"


def read_scored(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The lines a judging wrote so far. A last line cut short by a crash is skipped (and, with
    ``repair``, cut from the file: its item is judged again); a broken line before the last is an
    error, not guessed around."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        try:
            found = json.loads(line)
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise DataError(f"{path} line {i + 1}: not JSON; fix or delete the file to judge again") from None
            lines = lines[:-1]
            continue
        if not isinstance(found, dict) or not isinstance(found.get("index"), int) \
                or not (found.get("score") is None or isinstance(found.get("score"), int)):
            raise DataError(f"{path} line {i + 1}: not a judged item (an integer index and an integer or null score)")
        out.append(found)
    if repair and text and text != "".join(f"{line}\n" for line in lines):  # a tail cut short
        path.write_text("".join(f"{line}\n" for line in lines))
    return out


def append_scored(path: Path, lines: list[dict[str, Any]]) -> None:
    """Add judged items, flushed at once: a crash afterwards loses none of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
        f.flush()


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")


def read_summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path}: not JSON; delete it to judge again") from None
    return found if isinstance(found, dict) else None


def finished_results(run_dir: Path, answer: str = "tuned") -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """name -> (summary, per-item lines) of every finished judging (one with a summary) of a run's
    ``answer`` column: what the sweep report's judge columns are made of."""
    found = {}
    for summary_path in sorted((run_dir / JUDGE_DIR).glob("*.json")):
        summary = read_summary(summary_path)
        if summary is None or summary.get("answer") != answer or not isinstance(summary.get("name"), str):
            continue
        lines = read_scored(summary_path.with_suffix(".jsonl"))
        found[summary["name"]] = (summary, lines)
    return found
