"""Score a model on a split of an instruction data module by what it generates (used by every
training run, before and after tuning, and by ``instructune evaluate``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from instructune.data.datamodule import InstructionDataModule
from instructune.data.records import Record
from instructune.eval.generate import generate
from instructune.eval.metrics import generation_scores

log = logging.getLogger(__name__)


class SplitEvaluation:
    """Generate answers for one split (the test split by default) and score them; keeps every prediction for the JSONL file."""

    def __init__(self, data: InstructionDataModule, tokenizer: Any, architecture: str, split: str = "test",
                 max_examples: int | None = None, max_new_tokens: int = 32, batch_size: int = 32,
                 max_length: int | None = None) -> None:
        """``max_length``: positions the model has for prompt + answer (None: no limit); longer prompts
        keep their end (the instruction's tail and the response cue)."""
        self.tokenizer = tokenizer
        self.architecture = architecture
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = None
        if max_length is not None and architecture == "causal":
            if max_length - max_new_tokens < 1:
                raise ValueError(f"eval.max_new_tokens={max_new_tokens}: the model has {max_length} positions for "
                                 "prompt and answer together; lower eval.max_new_tokens")
            self.max_prompt_tokens = max_length - max_new_tokens
        self.batch_size, self.split = batch_size, split
        records: list[Record] = data.records.get(split, [])
        self.records = records[:max_examples] if max_examples else records
        self.prompts = [data.format_prompt(r) for r in self.records]
        # conversations: stop at the chat template's end-of-turn marker; prompts hold their special tokens as text
        self.stop: tuple[str, ...] = tuple(getattr(data, "stop", ()))
        self.add_special_tokens: bool = getattr(data, "prompt_special_tokens", True)
        self.seen_tasks = {r.get("task", "") for r in data.records.get("train", [])}
        self.answers: dict[str, list[str]] = {}

    def run(self, model: torch.nn.Module, who: str, keep: bool = True) -> dict[str, Any] | None:
        """Scores of ``model``'s answers; ``keep`` stores the answers under ``who`` for predictions.jsonl."""
        if not self.records:
            return None
        started = time.perf_counter()
        answers = generate(model, self.tokenizer, self.prompts, self.architecture, self.max_new_tokens, self.batch_size,
                           self.max_prompt_tokens, self.stop, self.add_special_tokens)
        if keep:
            self.answers[who] = answers
        scores = generation_scores(answers, [r["output"] for r in self.records],
                                     [r.get("task") for r in self.records], self.seen_tasks,
                                     [r.get("group") for r in self.records])
        log.info("%s model: exact match %.3f on %d %s examples (%.1fs)", who, scores["all"], scores["n"], self.split,
                 time.perf_counter() - started)
        return scores

    def samples(self, n: int) -> list[dict[str, str]]:
        """The first ``n`` examples, one per task where records have tasks (a more telling sample)."""
        picked: list[int] = []
        tasks: set[str] = set()
        for i, r in enumerate(self.records):
            if len(picked) == n:
                break
            if r.get("task") not in tasks or not r.get("task"):
                picked.append(i)
                tasks.add(r.get("task", ""))
        return [self._row(i) for i in picked]

    def _row(self, i: int) -> dict[str, str]:
        r = self.records[i]
        row = {"instruction": r["instruction"], "input": r["input"], "reference": r["output"],
               "task": r.get("task", ""), **{who: a[i] for who, a in self.answers.items()}}
        if r.get("task"):  # seen in training or a held-out family: the report's per-group item statistics
            row["seen"] = r["task"] in self.seen_tasks
        if r.get("group"):  # an evaluation group of its own (e.g. paraphrase): in neither seen nor held_out
            row["group"] = r["group"]
        if "messages" in r:  # a conversation: the turns the answer followed (instruction is the last user turn)
            row["messages"] = r["messages"][:-1]
        return row

    def write_predictions(self, path: Path) -> None:
        if self.answers:
            with path.open("w") as f:
                for i in range(len(self.records)):
                    f.write(json.dumps(self._row(i)) + "\n")
