"""The seams of the code: one batch contract, strategies that describe themselves, stages that import
only what comes before them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from instructune.batch import IGNORE_INDEX, REQUIRED_KEYS, Batch
from instructune.models.strategies import STRATEGIES

SRC = Path(__file__).resolve().parents[1] / "src" / "instructune"
CONF = Path(__file__).resolve().parents[1] / "conf"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize(("package", "forbidden"), [("data", "instructune.models"), ("models", "instructune.data")])
def test_data_and_models_meet_only_in_the_batch(package, forbidden):
    offenders = {str(f.relative_to(SRC)): sorted(m for m in _imports(f) if m.startswith(forbidden))
                 for f in (SRC / package).rglob("*.py")}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_the_ignore_index_and_batch_keys_are_defined_once():
    assert IGNORE_INDEX == -100 and REQUIRED_KEYS == ("input_ids", "attention_mask", "labels", "response_labels")
    assert set(Batch.__annotations__) == {*REQUIRED_KEYS, "position_ids", "loss_tokens_in_step"}
    defining = [str(f.relative_to(SRC)) for f in SRC.rglob("*.py")
                if re.search(r"IGNORE_INDEX\s*=|-100\b", f.read_text())]
    assert defining == ["batch.py"]


def test_no_strategy_is_recognised_by_its_name_outside_the_strategies_module():
    names = "|".join(STRATEGIES)
    comparison = re.compile(rf"""(==|!=|\bin)\s*[\(\[{{]?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    hits = [f"{f.relative_to(SRC)}:{i}" for f in SRC.rglob("*.py") if f.name != "strategies.py"
            for i, line in enumerate(f.read_text().splitlines(), 1) if comparison.search(line)]
    assert hits == []


def test_strategies_declare_their_capabilities():
    table = {name: (cls.adapter_only, cls.uses_virtual_tokens, cls.supports_packing,
                    cls.supports_gradient_checkpointing, cls.mergeable) for name, cls in STRATEGIES.items()}
    assert table == {
        "full": (False, False, True, True, False),
        "bitfit": (False, False, True, True, False),
        "lora": (True, False, True, True, True),
        "ia3": (True, False, True, True, True),
        "prefix": (True, True, False, False, False),
        "prompt": (True, True, False, True, False),
    }


def test_each_default_learning_rate_is_written_once_in_conf():
    for name, cls in STRATEGIES.items():
        assert cls().lr is None, f"{name}: the default lr belongs in conf/peft/{name}.yaml only"
        node = OmegaConf.load(CONF / "peft" / f"{name}.yaml")
        assert node["_target_"].endswith(cls.__name__) and isinstance(node["lr"], float) and node["lr"] > 0
