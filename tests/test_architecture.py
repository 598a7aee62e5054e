"""The seams of the code: one batch contract, strategies that describe themselves, stages that import
only what comes before them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from instructune.batch import (DTYPE, FLOAT_KEYS, IGNORE_INDEX, LOSS_WEIGHTS, POSITION_IDS, REQUIRED_KEYS, SCALAR_KEYS,
                               WEIGHT_DTYPE, Batch)
from instructune.models.strategies import STRATEGIES

SRC = Path(__file__).resolve().parents[1] / "src" / "instructune"
CONF = Path(__file__).resolve().parents[1] / "conf"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


# What each stage may import from instructune: the stages before it, never those after it.
ALLOWED = {
    "data": {"batch", "data"},
    "models": {"batch", "models"},
    "world": {"data", "world"},
    "eval": {"data", "eval"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_stage_imports_only_the_stages_before_it(package):
    """data/ and models/ meet only in the batch; world/ and eval/ build on data/ but not on models/
    (the world's base builder lives in tools/, the run folder's reader in run_folder.py)."""
    offenders = {str(f.relative_to(SRC)): sorted(m for m in _imports(f) if m.startswith("instructune.")
                                                 and m.split(".")[1] not in ALLOWED[package])
                 for f in (SRC / package).rglob("*.py")}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_no_module_is_over_300_lines():
    sizes = {str(f.relative_to(SRC)): len(f.read_text().splitlines()) for f in SRC.rglob("*.py")}
    assert {f: n for f, n in sizes.items() if n > 300} == {}


def test_the_ignore_index_is_defined_once():
    assert IGNORE_INDEX == -100
    defining = [str(f.relative_to(SRC)) for f in SRC.rglob("*.py")
                if re.search(r"IGNORE_INDEX\s*=|-100\b", f.read_text())]
    assert defining == ["batch.py"]


class _Window(list):
    """Examples as the sampler hands them over: with the window's loss-token count and packed row sizes."""

    window_tokens = 7
    row_sizes = [2, 1]


@pytest.mark.parametrize("collator", ["causal", "packed", "seq2seq", "weighted", "weighted_packed"])
def test_every_collator_produces_the_batch_contract(collator):
    """data/ writes exactly what batch.py declares and models/ reads: the required keys, long tensors
    (float weights), nothing undeclared; packed rows add position ids, training windows their loss-token
    count, a prompt-loss weight strictly between 0 and 1 the per-target weights."""
    from instructune.data.collate import CausalCollator, PackedCausalCollator, Seq2SeqCollator
    from instructune.data.tokenize import TokenizedExample

    make = {"causal": lambda: CausalCollator(pad_id=0), "packed": lambda: PackedCausalCollator(pad_id=0),
            "seq2seq": lambda: Seq2SeqCollator(pad_id=0),
            "weighted": lambda: CausalCollator(pad_id=0, prompt_weight=0.5),
            "weighted_packed": lambda: PackedCausalCollator(pad_id=0, prompt_weight=0.5)}[collator]
    if collator == "seq2seq":
        examples = [TokenizedExample([5, 6, 0], 3, labels=[8, 0]), TokenizedExample([9, 0], 2, labels=[11, 12, 0]),
                    TokenizedExample([13, 0], 2, labels=[14, 0])]
    else:
        examples = [TokenizedExample([5, 6, 7, 8, 0], 3), TokenizedExample([9, 10, 11, 0], 2),
                    TokenizedExample([13, 14, 0], 2)]
    batch = make()(_Window(examples))
    extra = ({"loss_tokens_in_step"} | ({POSITION_IDS} if "packed" in collator else set())
             | ({LOSS_WEIGHTS} if "weighted" in collator else set()))
    assert set(batch) == {*REQUIRED_KEYS, *extra} and set(batch) <= set(Batch.__annotations__)
    tensors = {k: v for k, v in batch.items() if k not in SCALAR_KEYS}
    assert {k: v.dtype for k, v in tensors.items()} == {k: WEIGHT_DTYPE if k in FLOAT_KEYS else DTYPE for k in tensors}
    # the window's count is a plain float: a half-precision Trainer casts floating tensors (65,504 max in fp16)
    assert type(batch["loss_tokens_in_step"]) is float and batch["loss_tokens_in_step"] == 7
    assert (batch["labels"] == IGNORE_INDEX).any()  # padding or prompt targets carry no loss


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
