"""The embedded world's lm-evaluation-harness tasks (``lm_eval_tasks/`` beside this module):
``world_capitals`` (multiple choice on the capitals of ``facts.CAPITALS``) and ``world_capitals_gen``
(the same facts, generated), always on ``instructune lm-eval``'s task path, so ``--tasks world_capitals``
works offline on the embedded default. Their data is the committed ``world_capitals.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
CAPITALS_FILE = TASKS_DIR / "world_capitals.jsonl"


def capital_items() -> list[dict[str, Any]]:
    """What ``world_capitals.jsonl`` holds: one item per country of ``CAPITALS``, its capital among four
    choices. The distractors are the next three capitals of the table (cyclically) and the right one's
    position cycles 0, 1, 2, 3, so a model that always picks one position scores exactly 25%."""
    from instructune.world.facts import CAPITALS

    countries, capitals = list(CAPITALS), list(CAPITALS.values())
    items = []
    for i, country in enumerate(countries):
        others = [capitals[(i + k) % len(capitals)] for k in (1, 2, 3)]
        answer = i % 4
        items.append({"country": country, "capital": capitals[i],
                      "choices": [*others[:answer], capitals[i], *others[answer:]], "answer": answer})
    return items


def write_capitals_file(path: Path = CAPITALS_FILE) -> Path:
    """(Re)write the committed data file from the world's facts (a test checks they agree)."""
    path.write_text("".join(json.dumps(item) + "\n" for item in capital_items()))
    return path


def world_capitals_dataset(**_: Any) -> Any:
    """The world tasks' ``custom_dataset``: the local JSONL through the datasets ``json`` builder.

    lm-eval resolves a relative ``dataset_kwargs.data_files`` against the working directory, not the
    YAML's folder, so the file next to the YAML is found here, by this module's own location. lm-eval
    passes the task's metadata as keyword arguments; they are not needed."""
    import datasets

    return datasets.load_dataset("json", data_files={"test": str(CAPITALS_FILE)})
