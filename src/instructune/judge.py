"""``instructune judge``: a judge model scores each test answer of a run 0 to 100 with a rubric prompt
(the book's by default, ``judge_rubric``), the judge being a local model folder or an OpenAI-compatible
endpoint (``judge_clients``). Items come from the run's ``predictions.jsonl``; scores are appended to
``<run>/judge/<name>.jsonl`` as they come (a crash loses nothing written, a rerun judges only the
rest) and summarised in ``<run>/judge/<name>.json`` with a bootstrap interval over the items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructune.data.records import DataError
from instructune.judge_clients import Judge, Reply, make_judge
from instructune.eval.judge_files import (
    ITEM_FIELDS,
    append_scored,
    read_scored,
    read_summary,
    result_paths,
    safe_name,
    write_summary,
)
from instructune.eval.judge_rubric import Rubric, load_rubric, parse_score
from instructune.run_folder import PREDICTIONS_FILE, read_predictions

ANSWERS = ("tuned", "base")


@dataclass
class JudgeResult:
    summary: dict[str, Any]
    scored_path: Path
    summary_path: Path
    judged_now: int  # items this call sent to the judge (0: everything was judged before)


def _items(run_dir: Path, answer: str) -> list[dict[str, Any]]:
    """The run's test items, each with the answer to judge; bad lines named by line number."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such run folder")
    try:
        lines = read_predictions(run_dir)
    except ValueError as e:
        raise DataError(f"{run_dir / PREDICTIONS_FILE}: not JSON lines: {e}") from None
    if lines is None:
        raise DataError(f"{run_dir}: no {PREDICTIONS_FILE}; judge a run folder that train or evaluate wrote")
    if not lines:
        raise DataError(f"{run_dir / PREDICTIONS_FILE}: no items to judge")
    for i, line in enumerate(lines):
        for field in (*ITEM_FIELDS, answer):
            if not isinstance(line.get(field) if isinstance(line, dict) else None, str):
                hint = " (was the run evaluated with eval.base=true?)" if field == "base" else ""
                raise DataError(f"{run_dir / PREDICTIONS_FILE} line {i + 1}: no text field {field!r}{hint}")
    return lines


def _check_earlier(path: Path, earlier: dict[str, Any], index: int, items: list[dict[str, Any]],
                   expected: dict[str, Any]) -> None:
    """An earlier line must be this judging's (same judge, rubric, answer) and this run's item."""
    where = f"{path} line {index + 1}"
    for key, value in expected.items():
        if earlier.get(key) != value:
            raise DataError(f"{where}: scored with {key}={earlier.get(key)!r}, this judging has {value!r}; "
                            "pass --name to keep both results (nothing is overwritten)")
    i = earlier.get("index")
    if not isinstance(i, int) or not 0 <= i < len(items) or any(earlier.get(f) != items[i][f] for f in ITEM_FIELDS):
        raise DataError(f"{where}: item {i!r} is not that line of {PREDICTIONS_FILE} any more; "
                        "move the judge folder away to judge again")


def _line(index: int, item: dict[str, Any], answer: str, reply: Reply, settings: dict[str, Any]) -> dict[str, Any]:
    line = {"index": index, **{f: item[f] for f in ITEM_FIELDS}}
    line |= {k: item[k] for k in ("task", "seen") if k in item}
    line |= {"answer": answer, "response": item[answer], "score": parse_score(reply.text), "raw": reply.text}
    if reply.truncated:
        line["truncated"] = True
    return line | settings


def summarize(lines: list[dict[str, Any]], judge: Judge, name: str, rubric: Rubric, answer: str,
              items: int) -> dict[str, Any]:
    """Mean score over the parsed items with a 95% bootstrap interval (one seed: item sampling)."""
    from instructune.bootstrap import DEFAULT_RESAMPLES, arm_interval

    scores = [line["score"] for line in sorted(lines, key=lambda line: line["index"]) if line["score"] is not None]
    interval = arm_interval([scores]) if scores else None
    return {"name": name, "judge": judge.identity, "kind": judge.kind, "model": judge.model, "answer": answer,
            "rubric": rubric.source, "rubric_sha256": rubric.sha256, "items": items, "n": len(scores),
            "unparsable": sum(line["score"] is None for line in lines),
            "truncated": sum(bool(line.get("truncated")) for line in lines),
            "mean": interval.mean if interval else None, "low": interval.low if interval else None,
            "high": interval.high if interval else None, "confidence": 0.95, "resamples": DEFAULT_RESAMPLES,
            "interval": "percentile bootstrap over items (instructune.bootstrap.arm_interval, one seed)"}


def judge_run(run_dir: Path, judge_spec: str, *, judge_model: str | None = None, answer: str = "tuned",
              rubric_path: Path | None = None, name: str | None = None, max_new_tokens: int = 16,
              batch_size: int = 8, timeout: float = 120.0, retries: int = 5, backoff: float = 1.0) -> JudgeResult:
    """Judge every item of a run not judged yet, then write the summary."""
    if answer not in ANSWERS:
        raise DataError(f"--answer {answer!r}: choose one of {', '.join(ANSWERS)}")
    for option, value, least in (("--max-new-tokens", max_new_tokens, 1), ("--batch-size", batch_size, 1),
                                 ("--retries", retries, 0), ("--timeout", timeout, 1e-9)):
        if value < least:
            raise DataError(f"{option}={value}: must be {'positive' if least else 'at least 0'}")
    run_dir = Path(run_dir)
    items = _items(run_dir, answer)
    rubric = load_rubric(rubric_path)
    judge = make_judge(judge_spec, judge_model, max_new_tokens, batch_size, timeout, retries, backoff)
    name = safe_name(name or judge.default_name)
    scored_path, summary_path = result_paths(run_dir, name, answer)
    settings = {"judge": judge.identity, "rubric_sha256": rubric.sha256}
    earlier = read_scored(scored_path, repair=True)
    done = set()
    for k, line in enumerate(earlier):
        _check_earlier(scored_path, line, k, items, {"answer": answer, **settings})
        if line["index"] in done:
            raise DataError(f"{scored_path} line {k + 1}: item {line['index']} is scored twice")
        done.add(line["index"])
    previous = read_summary(summary_path)
    if previous is not None and [previous.get(k) for k in settings] != list(settings.values()):
        raise DataError(f"{summary_path}: an earlier result by {previous.get('judge')!r}; pass --name to keep both")
    todo = [i for i in range(len(items)) if i not in done]
    for start in range(0, len(todo), judge.batch_size):
        chunk = todo[start:start + judge.batch_size]
        prompts = [rubric.fill(items[i]["instruction"], items[i]["input"], items[i]["reference"], items[i][answer])
                   for i in chunk]
        replies = judge.replies(prompts, [f"item {i}, {PREDICTIONS_FILE} line {i + 1}" for i in chunk])
        append_scored(scored_path, [_line(i, items[i], answer, reply, settings)
                                    for i, reply in zip(chunk, replies, strict=True)])
    summary = summarize(read_scored(scored_path), judge, name, rubric, answer, len(items))
    if todo or previous != summary:
        write_summary(summary_path, summary)
    return JudgeResult(summary, scored_path, summary_path, len(todo))


def score_line(summary: dict[str, Any]) -> str:
    """``judge score: 63.2 (95% CI 58.1–68.0, n=110, 0 unparsable)``."""
    tail = f"n={summary['n']}, {summary['unparsable']} unparsable"
    if summary["mean"] is None:
        return f"judge score: none ({tail})"
    return f"judge score: {summary['mean']:.1f} (95% CI {summary['low']:.1f}–{summary['high']:.1f}, {tail})"


def result_lines(result: JudgeResult) -> list[str]:
    """What ``instructune judge`` prints: the score, where it is, and what to look at."""
    s = result.summary
    lines = [score_line(s), f"per-item scores: {result.scored_path}; summary: {result.summary_path}"
             + ("" if result.judged_now else " (every item was judged before: nothing sent to the judge)")]
    if s["unparsable"]:
        lines.append(f"{s['unparsable']} repl{'y' if s['unparsable'] == 1 else 'ies'} without an integer from 0 to "
                     "100: score null, the reply kept as raw; they are left out of the mean")
    if s["truncated"]:
        lines.append(f"{s['truncated']} prompt(s) longer than the judge's positions: it saw only their end")
    return lines
