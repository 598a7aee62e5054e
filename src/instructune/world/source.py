"""The embedded world as a record source, and where its committed base models live."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from instructune.data.conversations import MessageFields, check_format, validate_conversations
from instructune.data.records import DataError, FieldMap, Splits, validate_records
from instructune.world.conversations import conversation_splits
from instructune.world.generator import instruction_splits
from instructune.world.splits import instruction_splits_v2

ASSETS = Path(__file__).parent / "assets"
WORLD_GPT2 = ASSETS / "world-gpt2"
WORLD_T5 = ASSETS / "world-t5"


@dataclass
class WorldSource:
    """Instruction records generated from the world's facts, with the world's own train / validation /
    test split (held-out task families only in test).

    ``version`` 2 (the default): 70 families in 6 clusters, 12 held-out compositions, a paraphrase group
    and the length knobs (``instruction_splits_v2``). ``version`` 1: the first world's 12 seen and 3
    held-out families, kept so that studies run on it (the masking and PEFT studies) stay reproducible;
    the length knobs and task sampling are version 2 only.

    Which seen families train: ``train_tasks`` (names), or ``train_task_count`` k of them, the first k of
    an order shuffled by ``task_sample_seed`` (so the subsets for k = 4, 8, 16 ... are nested).

    ``format``: ``instructions`` (the records above) or ``messages``: the same records as conversations, and
    multi-turn episodes made from ``multi_turn_fraction`` of the lookup and sum items (``world/conversations.py``).
    """

    seed: int = 0
    version: int = 2
    max_items_per_task: int = 120
    train_phrasings_per_item: int = 2
    max_train_records: int | None = None
    train_tasks: list[str] | None = None
    train_task_count: int | None = None
    task_sample_seed: int = 0
    context_sentences: int = 0
    answer_style: str = "short"
    format: str = "instructions"
    multi_turn_fraction: float = 0.5

    def load(self) -> Splits:
        where = f"world(seed={self.seed}, version={self.version})"
        chats = check_format(self.format) == "messages"
        if chats and self.version != 2:
            raise DataError(f"{where}: format=messages needs version 2")
        splits = self._generate(where)
        if self.train_tasks is not None and self.train_task_count is not None:
            raise DataError(f"{where}: give train_tasks or train_task_count, not both")
        keep = self.train_tasks if self.train_task_count is None else self.sampled_tasks(splits["train"])
        if keep is not None:
            unknown = sorted(set(keep) - {r["task"] for r in splits["train"]})
            if unknown:
                raise DataError(f"{where}: train_tasks names families with no training records: {', '.join(unknown)}")
            splits["train"] = [r for r in splits["train"] if r["task"] in keep]
        if chats:  # before the cut: an episode follows the record it extends
            try:
                splits = conversation_splits(splits, self.seed, self.multi_turn_fraction)
            except ValueError as e:
                raise DataError(f"{where}: {e}") from None
        if self.max_train_records is not None:
            splits["train"] = splits["train"][: self.max_train_records]
        if chats:
            fields = MessageFields(task="task", group="group")
            return {k: validate_conversations(v, fields, f"{where} [{k}]") for k, v in splits.items()}
        fields = FieldMap(task="task", group="group" if self.version >= 2 else None)
        return {k: validate_records(v, fields, f"{where} [{k}]") for k, v in splits.items()}

    def _generate(self, where: str) -> dict[str, list[dict[str, str]]]:
        if self.version == 1:
            if self.context_sentences or self.answer_style != "short":
                raise DataError(f"{where}: context_sentences and answer_style need version 2")
            return instruction_splits(self.seed, self.max_items_per_task, self.train_phrasings_per_item)
        if self.version != 2:
            raise DataError(f"{where}: version must be 1 or 2, got {self.version}")
        try:
            return instruction_splits_v2(self.seed, self.max_items_per_task, self.train_phrasings_per_item,
                                         context_sentences=self.context_sentences,
                                         answer_style=self.answer_style)  # type: ignore[arg-type]
        except ValueError as e:
            raise DataError(f"{where}: {e}") from None

    def sampled_tasks(self, train: list[dict[str, str]]) -> list[str]:
        """The first ``train_task_count`` seen families of an order shuffled by ``task_sample_seed``."""
        names = sorted({r["task"] for r in train})
        if not 1 <= (self.train_task_count or 0) <= len(names):
            raise DataError(f"world: train_task_count must be between 1 and {len(names)}, got {self.train_task_count}")
        random.Random(f"task-order/{self.task_sample_seed}").shuffle(names)
        return names[: self.train_task_count]
