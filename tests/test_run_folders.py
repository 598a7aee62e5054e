"""Run folders a user can move and re-score: the base model is named portably, a copied run still
answers, a merged model folder answers like its run, and `instructune evaluate --data` scores a whole
new file without overwriting an earlier result."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import train_in_process
from instructune.cli import main as cli
from instructune.run_folder import base_reference, resolve_base
from instructune.world.source import ASSETS, WORLD_GPT2


def test_base_references_are_portable(tmp_path):
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    (tmp_path / "bases" / "mine").mkdir(parents=True)
    assert base_reference(str(WORLD_GPT2), model_dir) == "asset:world-gpt2"
    assert base_reference(str(tmp_path / "bases" / "mine"), model_dir) == "../../bases/mine"
    assert base_reference("gpt2-medium", model_dir) == "gpt2-medium"
    assert resolve_base("asset:world-gpt2", model_dir) == str(ASSETS / "world-gpt2")
    assert resolve_base("../../bases/mine", model_dir) == str((tmp_path / "bases" / "mine").resolve())
    assert resolve_base("gpt2-medium", model_dir) == "gpt2-medium"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    assert train_in_process("logger=none", "trainer.max_steps=30", "trainer.val_check_interval=30",
                            "data.source.max_train_records=240", "eval.base=false", "eval.max_examples=4",
                            "eval.max_new_tokens=8", "eval.samples=0", "checkpoint=none",
                            f"hydra.run.dir={run}").returncode == 0
    return run


def _answers(capsys, folder, instruction: str, input_text: str) -> str:
    capsys.readouterr()
    cli(["generate", str(folder), instruction, "--input", input_text, "--max-new-tokens", "8"])
    return capsys.readouterr().out.strip()


@pytest.mark.slow
def test_a_copied_run_and_its_merged_model_answer_like_the_run(run, tmp_path, capsys):
    meta = json.loads((run / "model" / "instructune.json").read_text())
    assert meta["base_model"] == "asset:world-gpt2" and meta["adapter_only"] is True
    prediction = json.loads((run / "predictions.jsonl").read_text().splitlines()[0])
    asked = prediction["instruction"], prediction["input"]
    copied = shutil.copytree(run, tmp_path / "elsewhere" / "copied-run")
    assert _answers(capsys, copied, *asked) == prediction["tuned"]
    cli(["merge", str(copied), str(tmp_path / "merged")])
    assert json.loads((tmp_path / "merged" / "instructune.json").read_text())["merged"] is True
    assert _answers(capsys, tmp_path / "merged", *asked) == prediction["tuned"]


@pytest.mark.slow
def test_evaluate_scores_a_whole_new_file_and_keeps_earlier_results(run, tmp_path, capsys):
    records = [{"instruction": f"How many letters are in the word {w}?", "input": "", "output": str(len(w))}
               for w in ("big", "river", "house", "sun", "window", "tree", "bird")]
    data = tmp_path / "letters.json"
    data.write_text(json.dumps(records))
    cli(["evaluate", str(run), "--data", str(data), "eval.max_new_tokens=4"])
    cli(["evaluate", str(run), "--data", str(data), "eval.max_new_tokens=4"])
    first, second = run / "eval_letters_all.json", run / "eval_letters_all-2.json"
    assert json.loads(first.read_text())["scores"]["n"] == 7  # every record, not a 5% test split
    assert json.loads(second.read_text())["scores"] == json.loads(first.read_text())["scores"]
    cli(["evaluate", str(run), "--data", str(data), "--split", "validation", "eval.max_new_tokens=4",
         "data.source.splits.train=0.5", "data.source.splits.validation=0.5", "data.source.splits.test=0"])
    assert json.loads((run / "eval_letters_validation.json").read_text())["split"] == "validation"


@pytest.mark.slow
def test_a_run_shorter_than_the_validation_interval_is_validated_at_its_end(tmp_path):
    run = tmp_path / "short"
    assert train_in_process("logger=csv", "trainer.max_steps=5", "eval.base=false", "eval.max_examples=2",
                            "eval.max_new_tokens=2", "checkpoint=none", "export=false",
                            f"hydra.run.dir={run}").returncode == 0  # val_check_interval stays 200
    summary = json.loads((run / "summary.json").read_text())
    rows = (run / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [(int(r.split(",")[header.index("step")]), float(r.split(",")[header.index("val/loss")]))
              for r in rows[1:] if r.split(",")[header.index("val/loss")]]
    assert logged == [(5, summary["metrics"]["val/loss"])]
