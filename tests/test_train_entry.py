"""The real entry point, as a user runs it: `python train.py` on tiny settings, and sweeps.

Single runs go through train.py's own Hydra entry point inside the test process
(``conftest.train_in_process``: the same run folder, no new interpreter); sweeps (``-m``, launchers)
and the one exit-status check stay real subprocesses, as the process boundary is what they test."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATA, compose_train_config, train_in_process, untrained_val_loss
from instructune.data.prompts import PromptStyle

TINY = ["trainer.max_steps=30", "trainer.val_check_interval=15", "data.source.max_train_records=240",
        "eval.max_examples=24", "eval.max_new_tokens=12"]


def train(*overrides: str, multirun: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python train.py`` as a real subprocess (for sweeps, DDP, SIGKILL, exit status and stderr)."""
    cmd = [sys.executable, "train.py", *(["-m"] if multirun else []), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def fed_token_counts(*overrides: str) -> dict[str, float]:
    """Real and loss-bearing tokens and the padding fraction of every training batch Lightning feeds a
    run of ``overrides``: the run's own data module, driven by a Trainer for the same steps and
    accumulation, into a module that only counts (what summary.json's ``throughput`` must report)."""
    import lightning as L
    import torch

    from instructune.batch import IGNORE_INDEX
    from instructune.train import build_parts

    class Count(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.real = self.loss = self.positions = 0

        def training_step(self, batch, batch_idx):
            self.real += int(batch["attention_mask"].sum())
            self.loss += int((batch["labels"] != IGNORE_INDEX).sum())
            self.positions += batch["input_ids"].numel()
            return self.w.sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    cfg = compose_train_config(*overrides)
    data = build_parts(cfg).data  # the run's own data module
    count = Count()
    L.Trainer(accelerator="cpu", max_steps=cfg.trainer.max_steps, accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
              limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(count, datamodule=data)
    return {"real_tokens": count.real, "loss_tokens": count.loss,
            "padding_fraction": round(1 - count.real / count.positions, 4)}


def _check_throughput(summary: dict, overrides: list[str]) -> None:
    """Exact token counts; rates and MFU consistent with them (their seconds are the only measured part)."""
    t = summary["throughput"]
    assert {k: t[k] for k in ("real_tokens", "loss_tokens", "padding_fraction")} == fed_token_counts(*overrides)
    assert t["real_tokens_per_s"] == pytest.approx(t["real_tokens"] / t["train_seconds"], rel=0.01)
    assert t["loss_tokens_per_s"] == pytest.approx(t["loss_tokens"] / t["train_seconds"], rel=0.01)
    assert t["achieved_flops"] == pytest.approx(t["flops_per_token"] * t["real_tokens_per_s"], rel=0.01)
    assert t["peak_source"] == "measured: 1024x1024 fp32 matmul on cpu"  # 32-true on the CPU: the measured peak
    assert t["mfu"] == pytest.approx(t["achieved_flops"] / t["peak_flops"], abs=1e-4) and 0 < t["mfu"] < 1


@pytest.mark.slow
def test_default_run_on_tiny_settings_writes_a_complete_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    proc = train_in_process(*TINY, f"hydra.run.dir={tmp_path}", capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(tmp_path)
    assert summary["status"] == "ok"
    assert summary["config"] == {"model": "world-gpt2", "data": "world", "peft": "lora", "masking": True,
                                 "prompt_weight": 0.0, "seed": 42,
                                 "prompt_style": "alpaca"}
    # the software that produced the result, for reproducing it
    from importlib.metadata import version

    import torch
    assert summary["versions"]["torch"] == torch.__version__
    assert {k: summary["versions"][k] for k in ("transformers", "peft", "lightning", "datasets")} == {
        k: version(k) for k in ("transformers", "peft", "lightning", "datasets")}
    assert summary["versions"]["cuda"] == torch.version.cuda
    assert summary["versions"]["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    # LoRA r=8 on c_attn (128 -> 384) in 4 layers: 4 * (128*8 + 8*384), at LoRA's default learning rate
    assert summary["params"]["trainable"] == 16384 and summary["lr"] == 1e-2
    assert summary["steps"] == 30 and summary["data"] == {"train": 240, "validation": 281, "test": 706}
    metrics = summary["metrics"]
    assert set(metrics) == {"train/loss", "train/lr", "val/loss", "val/ppl"}
    assert metrics["val/ppl"] == pytest.approx(2.718281828 ** metrics["val/loss"], rel=1e-3)
    # the last step's rate of the linear schedule: 2 warm-up steps, then 1e-2 * (30 - 29) / (30 - 2)
    assert metrics["train/lr"] == pytest.approx(1e-2 / 28, rel=1e-6)
    # tuning helped: the response loss on the validation split is below the untrained adapter's
    assert metrics["val/loss"] < untrained_val_loss(*TINY)
    from instructune.world.source import WorldSource

    world = WorldSource().load()
    test_records, trained = world["test"][:24], {r["task"] for r in world["train"][:240]}
    tasks = {f"task/{r['task']}" + (f"@{r['group']}" if r.get("group") else "") for r in test_records}
    groups = {"paraphrase" if r.get("group") else "seen" if r["task"] in trained else "held_out" for r in test_records}
    assert groups == {"seen", "held_out", "paraphrase"}  # the first 24 test items have every group
    for who in ("base", "tuned"):
        assert summary["eval"][who]["n"] == 24
        assert set(summary["eval"][who]) == {"n", "all", *groups, *tasks,
                                             *(f"{m}/{g}" for m in ("rougeL", "chrf") for g in ("all", *groups))}
    assert "exact match on the test split (24 examples)" in proc.stdout and "| seen tasks" in proc.stdout
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(p["instruction"], p["input"], p["reference"], p["task"]) for p in predictions] == [
        (r["instruction"], r["input"], r["output"], r["task"]) for r in test_records]
    keys = frozenset({"instruction", "input", "reference", "task", "seen", "base", "tuned"})
    assert {frozenset(p) for p in predictions} == {keys, keys | {"group"}}
    # seen: the family is in this run's train split (240 records: not every family); paraphrased items say so
    assert [p["seen"] for p in predictions] == [r["task"] in trained for r in test_records]
    assert [p.get("group") for p in predictions] == [r.get("group") for r in test_records]
    model_dir = tmp_path / "model"
    assert (model_dir / "adapter_config.json").is_file() and (model_dir / "adapter_model.safetensors").is_file()
    assert not (model_dir / "model.safetensors").exists()
    assert json.loads((model_dir / "prompt_style.json").read_text())["name"] == "alpaca"
    assert (tmp_path / ".hydra" / "config.yaml").is_file() and (tmp_path / "config.yaml").is_file()
    from peft import PeftModel

    from instructune.data.tokenizer_loading import load_tokenizer
    from instructune.eval.generate import generate
    from instructune.models.loading import load_model

    from instructune.run_folder import resolve_base
    from instructune.world.source import WORLD_GPT2

    base_model = json.loads((model_dir / "instructune.json").read_text())["base_model"]
    assert base_model == "asset:world-gpt2"  # the embedded base by name, so a copied run folder still loads
    assert resolve_base(base_model, model_dir) == str(WORLD_GPT2)
    tuned = PeftModel.from_pretrained(load_model(resolve_base(base_model, model_dir)), model_dir)
    sample = summary["samples"][0]
    prompt_style = PromptStyle.load(model_dir)
    answer = generate(tuned, load_tokenizer(str(model_dir)), [prompt_style.format(sample["instruction"], sample["input"])],
                      max_new_tokens=12)
    assert answer == [sample["tuned"]]  # the saved adapter reproduces the run's own generation
    # W&B ran offline without a key (one offline run), and the CSV logger wrote both validations
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as f:
        val = [float(row["val/loss"]) for row in csv.DictReader(f) if row["val/loss"]]
    assert len(val) == 2 and val[-1] == pytest.approx(metrics["val/loss"], rel=1e-6)
    _check_throughput(summary, TINY)  # tokens/s and MFU for the sweep report's cost columns


@pytest.mark.slow
def test_packed_run_with_gradient_accumulation(tmp_path):
    """Packing, length grouping and accumulation through the real entry point: fewer padded positions,
    the same examples and the same number of optimiser steps."""
    packed_overrides = [*TINY, "logger=none", "data.packing=true", "data.batch_size=4",
                        "trainer.accumulate_grad_batches=2", "eval.base=false"]
    assert train_in_process(*packed_overrides, f"hydra.run.dir={tmp_path / 'packed'}").returncode == 0
    packed = _summary(tmp_path / "packed")
    grouped_overrides = [*TINY, "logger=none", "data.group_by_length=true", "eval.base=false"]
    assert train_in_process(*grouped_overrides, f"hydra.run.dir={tmp_path / 'grouped'}").returncode == 0
    grouped = _summary(tmp_path / "grouped")
    for summary, overrides in ((packed, packed_overrides), (grouped, grouped_overrides)):
        assert summary["status"] == "ok" and summary["steps"] == 30 and summary["data"]["train"] == 240
        _check_throughput(summary, overrides)
    # plain batches of 16 world examples are ~25% padding (the default run's summary); 2 epochs of the
    # 240 examples in batches of 16 either way: the grouped run saw exactly the plain run's tokens
    assert packed["throughput"]["padding_fraction"] < 0.1 and grouped["throughput"]["padding_fraction"] < 0.1
    plain = fed_token_counts(*TINY)
    assert (grouped["throughput"]["real_tokens"], grouped["throughput"]["loss_tokens"]) == (
        plain["real_tokens"], plain["loss_tokens"])
    # both learned: validation loss (never packed or grouped) below the untrained model's on the same batches
    untrained = untrained_val_loss(*TINY)
    assert packed["metrics"]["val/loss"] < untrained and grouped["metrics"]["val/loss"] < untrained


@pytest.mark.slow
def test_multirun_lora_ia3_by_masking_runs_four_jobs(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    proc = train("peft=lora,ia3", "masking=true,false", "trainer.max_steps=4",
                 "trainer.val_check_interval=4", "data.source.max_train_records=64", "eval.max_examples=4",
                 "eval.max_new_tokens=4", "eval.base=false", "export=false", f"hydra.sweep.dir={tmp_path}", multirun=True,
                 env=env)
    assert proc.returncode == 0
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    # each job's folder is named by its number and its overrides (sorted by key, booleans as Hydra parsed them)
    assert [p.name for p in jobs] == [
        f"{n}_data.source.max_train_records=64,eval.base=False,eval.max_examples=4,eval.max_new_tokens=4,export=False,"
        f"masking={masking},peft={peft},trainer.max_steps=4,trainer.val_check_interval=4"
        for n, (peft, masking) in enumerate([("lora", True), ("lora", False), ("ia3", True), ("ia3", False)])]
    seen = set()
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["steps"] == 4
        assert (job / ".hydra" / "config.yaml").is_file()
        # one offline W&B run per job, finished, grouped under the sweep's name
        wandb_files = list(job.glob("wandb/offline-run-*/run-*.wandb"))
        group = tmp_path.name.encode()  # RunRecord field 6 (run_group), length-prefixed, in the protobuf log
        assert len(wandb_files) == 1 and b"\x32" + bytes([len(group)]) + group in wandb_files[0].read_bytes()
        seen.add((summary["config"]["peft"], summary["config"]["masking"], summary["params"]["trainable"]))
    # IA3 on the world GPT-2: c_attn (384) + mlp.c_proj (512 inputs) per layer, 4 layers
    assert seen == {("lora", True, 16384), ("lora", False, 16384), ("ia3", True, 3584), ("ia3", False, 3584)}
    # and the sweep report over the real jobs: one row each, loss curves from their CSV logs
    from instructune.cli import main as instructune_cli

    instructune_cli(["report", str(tmp_path)])  # returns (exit status 0) where a failure would sys.exit
    report = (tmp_path / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    # 4 configurations in the main table, the Wilson table and the overlap table, 3 paired against the first one
    assert len(rows) == 4 + 4 + 3 + 4 and sum(line.endswith("| ok |") for line in rows) == 4
    overlap = report.split("## Train / evaluation overlap")[1]  # the world's splits: no overlap, nothing dropped
    assert "| `peft=lora masking=True` | 0 / 281 (0 / 0 / 0) | 0 / 706 (0 / 0 / 0) | 0 |" in overlap
    assert "## Paired comparisons" in report and "Correction: Holm over the k = 3 comparison(s)" in report
    assert (tmp_path / "val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_file(), reason=f"{SHARED_DATA} is absent (the shared LLMs-from-scratch data)")
def test_trains_on_the_shared_instruction_data(tmp_path):
    proc = train_in_process("data=instruction_data", f"data.path={SHARED_DATA}", "logger=csv", "trainer.max_steps=20",
                            "trainer.val_check_interval=10", "data.batch_size=8", "eval.max_examples=8",
                            "eval.max_new_tokens=8", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data"] == {"train": 935, "validation": 110, "test": 55}
    assert summary["config"]["data"] == "instruction_data" and summary["status"] == "ok"
    metrics = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(metrics) == 8
    # the loss of a 1M-parameter world model on real English is high but finite, and training lowers it
    csv_rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    val = [float(r.split(",")[header.index("val/loss")]) for r in csv_rows[1:] if r.split(",")[header.index("val/loss")]]
    assert len(val) == 2 and val[1] < val[0]


def test_bad_input_is_one_clear_line(tmp_path):
    proc = train("data=json", f"data.path={tmp_path / 'missing.json'}", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == [
        f"error: {tmp_path / 'missing.json'}: no such file"]
    assert "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["status"], summary["error"]) == ("failed", f"DataError: {tmp_path / 'missing.json'}: no such file")


@pytest.mark.slow
def test_seq2seq_run_through_train_py(tmp_path):
    """A tiny T5 with the world tokenizer, loaded from a local folder, tuned with LoRA end to end."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from instructune.world.source import WORLD_GPT2

    tok = AutoTokenizer.from_pretrained(WORLD_GPT2)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                num_heads=4, eos_token_id=tok.eos_token_id,
                                                pad_token_id=tok.pad_token_id, decoder_start_token_id=tok.pad_token_id))
    model.save_pretrained(tmp_path / "tiny-t5")
    tok.save_pretrained(tmp_path / "tiny-t5")
    run = tmp_path / "run"
    proc = train_in_process(f"model.name_or_path={tmp_path / 'tiny-t5'}", "model.architecture=seq2seq",
                            "model.name=tiny-t5", "data.prompt.style=flan", "logger=csv", "trainer.max_steps=4",
                            "trainer.val_check_interval=4", "trainer.precision=bf16-mixed",
                            "data.source.max_train_records=32", "eval.max_examples=4", "eval.max_new_tokens=4",
                            f"hydra.run.dir={run}")
    assert proc.returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["config"]["model"] == "tiny-t5" and summary["steps"] == 4
    # LoRA r=8 on T5's q and v (32 -> 32) in 6 attention blocks (2 encoder self, 2 decoder self, 2 cross)
    assert summary["params"]["trainable"] == 6 * 2 * (8 * 32 + 8 * 32)
    assert (run / "model" / "adapter_config.json").is_file()
    assert "masking=True changes nothing for this model" in (run / "train.log").read_text()
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"


@pytest.mark.slow
def test_bitfit_with_chat_prompts_exports_a_full_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from instructune.data.prompts import PromptStyle

    proc = train_in_process("peft=bitfit", "data.prompt.style=chat", "masking=false", "logger=none",
                            "trainer.max_steps=6", "trainer.val_check_interval=6", "data.source.max_train_records=48",
                            "eval.max_examples=4", "eval.max_new_tokens=4", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    # biases of the world GPT-2: per layer ln_1 128 + c_attn 384 + c_proj 128 + ln_2 128 + c_fc 512 + proj 128; ln_f 128
    assert summary["params"]["trainable"] == 4 * 1408 + 128
    assert (summary["config"]["masking"], summary["config"]["prompt_style"]) == (False, "chat")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert sum(p.numel() for p in model.parameters()) == summary["params"]["total"]
    assert PromptStyle.load(tmp_path / "model").name == "chat"
    resolved = (tmp_path / "config.yaml").read_text()
    assert "${" not in resolved and "_target_: instructune.models.strategies.BitFit" in resolved


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # max_seq_length=8: every prompt fills the window, so that job fails with a clear reason
    proc = train("data.max_seq_length=8,256", "logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2",
                 "data.source.max_train_records=16", "eval.max_examples=2", "eval.max_new_tokens=2", "eval.base=false",
                 "export=false", f"hydra.sweep.dir={tmp_path}", multirun=True)
    assert proc.returncode == 1  # the sweep reports its failure ...
    failed = json.loads(next(tmp_path.glob("0_*max_seq_length=8,*/summary.json")).read_text())
    ok = json.loads(next(tmp_path.glob("1_*max_seq_length=256,*/summary.json")).read_text())
    assert failed["status"] == "failed" and "was dropped by max_seq_length=8" in failed["error"]
    assert ok["status"] == "ok"  # ... after running the other job


@pytest.mark.slow
def test_multirun_through_the_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = train("hydra/launcher=submitit_local", "peft=lora,bitfit", "logger=csv", "trainer.max_steps=2",
                 "trainer.val_check_interval=2", "data.source.max_train_records=16", "eval.max_examples=2",
                 "eval.max_new_tokens=2", "eval.base=false", "export=false", "checkpoint=none",
                 f"hydra.sweep.dir={tmp_path}", multirun=True)
    assert proc.returncode == 0
    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/summary.json"))]
    assert [(s["status"], s["config"]["peft"]) for s in summaries] == [("ok", "lora"), ("ok", "bitfit")]
    assert len(list(tmp_path.glob(".submitit/*/*_log.out"))) == 2  # each job ran as its own submitit process


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert train_in_process("logger=none", "trainer.max_steps=8", "trainer.val_check_interval=8",
                                "data.source.max_train_records=64", "eval.base=false", "eval.tuned=false", "export=false",
                                "checkpoint=none", f"seed={seed}", f"hydra.run.dir={tmp_path / name}").returncode == 0
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())["metrics"]
    assert runs["a"] == runs["b"]  # bit-identical, LoRA dropout included
    assert runs["a"]["train/loss"] != runs["c"]["train/loss"]
