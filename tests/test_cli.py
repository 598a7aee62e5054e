"""`instructune generate`, `merge` and `evaluate` on a real (tiny) run folder: the run is trained in
this process (conftest.train_in_process); the commands run as the user types them, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, train_in_process


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("lora-run")
    assert train_in_process("logger=none", "trainer.max_steps=40", "trainer.val_check_interval=40",
                            "data.source.max_train_records=240", "eval.base=false", "eval.max_examples=6",
                            "eval.max_new_tokens=12", "checkpoint=none", f"hydra.run.dir={run}").returncode == 0
    return run


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instructune.cli", *args], cwd=REPO, capture_output=True, text=True,
                          input=stdin, timeout=300)


@pytest.mark.slow
def test_generate_reproduces_the_runs_own_answers(lora_run):
    predictions = [json.loads(line) for line in (lora_run / "predictions.jsonl").read_text().splitlines()]
    one = next(p for p in predictions if not p["input"])
    proc = _cli("generate", str(lora_run), one["instruction"], "--max-new-tokens", "12")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == one["tuned"]
    no_input = [p for p in predictions if not p["input"]][:2]
    proc = _cli("generate", str(lora_run / "model"), "--max-new-tokens", "12",
                stdin="".join(p["instruction"] + "\n" for p in no_input))
    assert proc.stdout.splitlines() == [p["tuned"] for p in no_input]


@pytest.mark.slow
def test_merge_gives_a_plain_model_with_the_same_answers(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from instructune.data.prompts import PromptStyle
    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.eval.generate import generate
    from instructune.world.source import WORLD_GPT2

    out = tmp_path / "merged"
    assert _cli("merge", str(lora_run), str(out)).returncode == 0
    merged = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(WORLD_GPT2).named_parameters())
    # exactly the base model's tensors, no adapter left; LoRA folded into the 4 c_attn weights and nothing else
    assert list(merged) == list(base)
    assert {n for n, p in merged.items() if not torch.equal(p, base[n])} == {
        f"transformer.h.{i}.attn.c_attn.weight" for i in range(4)}
    merged = AutoModelForCausalLM.from_pretrained(out)
    predictions = [json.loads(line) for line in (lora_run / "predictions.jsonl").read_text().splitlines()]
    style = PromptStyle.load(out)
    answers = generate(merged, load_tokenizer(str(out)), [style.format(p["instruction"], p["input"]) for p in predictions],
                       max_new_tokens=12)
    assert answers == [p["tuned"] for p in predictions]


def test_cli_errors_are_one_line(tmp_path):
    proc = _cli("generate", str(tmp_path), "hello")
    assert proc.returncode == 1 and "no instructune.json" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_evaluate_scores_a_run_without_training(lora_run, tmp_path):
    summary = json.loads((lora_run / "summary.json").read_text())
    out = tmp_path / "eval.json"
    proc = _cli("evaluate", str(lora_run), "eval.max_examples=6", "eval.max_new_tokens=12", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(out.read_text())["scores"]
    assert scores["n"] == 6 and scores["all"] == summary["eval"]["tuned"]["all"]  # the run's own numbers again
    assert "exact match" in proc.stdout
