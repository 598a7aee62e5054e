"""The embedded world as a record source, and where its committed base models live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from instructune.data.records import FieldMap, Splits, validate_records
from instructune.world.generator import instruction_splits

ASSETS = Path(__file__).parent / "assets"
WORLD_GPT2 = ASSETS / "world-gpt2"
WORLD_T5 = ASSETS / "world-t5"


@dataclass
class WorldSource:
    """Instruction records generated from the world's facts; its own train/validation/test split
    (held-out task families only in test). ``train_tasks`` limits the seen families used for training."""

    seed: int = 0
    max_items_per_task: int = 120
    train_phrasings_per_item: int = 2
    max_train_records: int | None = None
    train_tasks: list[str] | None = None

    def load(self) -> Splits:
        splits = instruction_splits(self.seed, self.max_items_per_task, self.train_phrasings_per_item)
        if self.train_tasks is not None:
            splits["train"] = [r for r in splits["train"] if r["task"] in self.train_tasks]
        if self.max_train_records is not None:
            splits["train"] = splits["train"][: self.max_train_records]
        fields = FieldMap(task="task")
        return {k: validate_records(v, fields, f"world(seed={self.seed}) [{k}]") for k, v in splits.items()}

