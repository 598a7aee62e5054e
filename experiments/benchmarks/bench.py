"""Training throughput, side by side: instructune vs the HF Trainer tutorial recipe vs TRL's
SFTTrainer vs a bare PyTorch loop, on the same model, data, prompt, batch size, precision and steps.

    python experiments/benchmarks/bench.py                 # CPU suite (~20 min on 2 cores)
    python experiments/benchmarks/bench.py --suite gpu     # gpt2 / gpt2-medium configs, bf16, on a GPU
    python experiments/benchmarks/bench.py --suite memory  # peak RSS: LoRA vs full FT, 124M GPT-2 from config

Every measurement is its own process launch, and the contenders run interleaved (A B C D, A B C D,
...) so drift of a shared machine hits all of them alike; the table quotes medians over repeats.
Only training steps are timed (after warm-up steps): no tokenisation, model loading or imports.

Tokens/s counts *real* tokens: the non-padding positions a step processes (for packed or
padding-free batches, every position is real). The same records, prompt text (Alpaca) and
response-only loss go to everyone; the HF recipe is the tutorial's (pad every example to
``max_length``; its loss covers prompt and response, which costs the same FLOPs).
MFU = (FLOPs per real token, counted by torch's FlopCounterMode on a forward+backward of an
instructune batch) x real tokens/s / the matmul peak measured here before the runs.

TRL is a benchmark-only dependency (``pip install trl``), never a runtime one of instructune.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "instruction-data.json"

# (name, model, data, max_length, warm-up steps, measured steps)
CPU_CASES = [
    ("world-gpt2 x world data", "world-gpt2", "world", 256, 10, 100),
    # 256: the world GPT-2 has 256 positions (the HF recipe pads every example to max_length)
    ("world-gpt2 x instruction-data.json", "world-gpt2", "instruction-data", 256, 5, 40),
    ("gpt2-5m x world data", "gpt2-5m", "world", 256, 5, 40),
]
GPU_CASES = [
    ("gpt2 x instruction-data.json", "gpt2", "instruction-data", 512, 10, 100),
    ("gpt2-medium x instruction-data.json", "gpt2-medium", "instruction-data", 512, 10, 100),
]
CONTENDERS = ["instructune", "instructune_packed", "hf_trainer", "trl_dynamic", "trl_padding_free", "trl_packing",
              "bare_loop"]
BATCH_SIZE = 4


# ---------------------------------------------------------------- worker side (one process per run)

def _records(data: str) -> list[dict[str, str]]:
    if data == "world":
        from instructune.world.source import WorldSource

        return WorldSource().load()["train"]
    if not SHARED_DATA.is_file():
        raise SystemExit(f"skip: {SHARED_DATA} is absent")
    from instructune.data.records import DatasetSource

    return DatasetSource(path=str(SHARED_DATA)).load()["train"]


def _model_and_tokenizer(name: str, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from instructune.data.tokenizer import load_tokenizer
    from instructune.world.source import WORLD_GPT2

    torch.manual_seed(0)
    if name == "world-gpt2":
        model = AutoModelForCausalLM.from_pretrained(WORLD_GPT2)
        tokenizer = load_tokenizer(str(WORLD_GPT2))
    elif name == "gpt2-5m":  # ~5M parameters from config, the world tokenizer
        tokenizer = load_tokenizer(str(WORLD_GPT2))
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=256, n_layer=6,
                                           n_head=8, eos_token_id=tokenizer.eos_token_id,
                                           bos_token_id=tokenizer.eos_token_id, resid_pdrop=0.0, embd_pdrop=0.0,
                                           attn_pdrop=0.0))
    else:  # gpt2 / gpt2-medium architecture from config (no download), the world tokenizer's ids
        tokenizer = load_tokenizer(str(WORLD_GPT2))
        base = {"gpt2": {}, "gpt2-medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16}}[name]
        model = GPT2LMHeadModel(GPT2Config(**base, eos_token_id=tokenizer.eos_token_id,
                                           bos_token_id=tokenizer.eos_token_id))
    return model.to(device), tokenizer


def _pairs(records: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    from instructune.data.prompts import make_prompt_style

    style = make_prompt_style("alpaca")
    return [style.format(r["instruction"], r.get("input", "")) for r in records], [r["output"] for r in records]


def _real_tokens(batch: dict[str, Any]) -> int:
    if "attention_mask" in batch:  # instructune's packed rows keep a mask: 0 on the row's padded tail
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())  # TRL padding-free: one flat row, every position real


class _StepClock:
    """Seconds and real tokens of steps warmup+1 .. warmup+measured (batch tokens recorded in order)."""

    def __init__(self, warmup: int, measured: int) -> None:
        self.warmup, self.measured = warmup, measured
        self.batch_tokens: list[int] = []
        self.batch_positions: list[int] = []
        self.start = self.end = 0.0

    def record(self, batch: dict[str, Any]) -> None:
        self.batch_tokens.append(_real_tokens(batch))
        self.batch_positions.append(int(batch["input_ids"].numel()))

    def step_done(self, step: int, sync: Any) -> None:
        if step == self.warmup:
            sync()
            self.start = time.perf_counter()
        elif step == self.warmup + self.measured:
            sync()
            self.end = time.perf_counter()

    def result(self) -> dict[str, float]:
        window = slice(self.warmup, self.warmup + self.measured)
        tokens, positions = sum(self.batch_tokens[window]), sum(self.batch_positions[window])
        seconds = self.end - self.start
        return {"seconds": seconds, "real_tokens": tokens, "tokens_per_s": tokens / seconds,
                "padding_fraction": 1 - tokens / max(positions, 1)}


def _instructune_data(records, tokenizer, max_length: int, packing: bool = False):
    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.records import InlineSource

    data = InstructionDataModule(InlineSource({"train": records}), tokenizer, "alpaca", masking=True,
                                 max_seq_length=max_length, batch_size=BATCH_SIZE, seed=0, packing=packing)
    data.setup("fit")
    return data


def run_instructune(model, tokenizer, records, max_length, warmup, measured, device, precision,
                    packing: bool = False, data=None) -> dict[str, Any]:
    import lightning as L

    from instructune.models.module import InstructionTuningModule, OptimizerConfig

    clock = _StepClock(warmup, measured)
    sync = _sync(device)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.record(batch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.step_done(trainer.global_step, sync)

    data = data if data is not None else _instructune_data(records, tokenizer, max_length, packing=packing)
    module = InstructionTuningModule(model, "causal", OptimizerConfig(lr=1e-4, warmup_ratio=0.0))
    trainer = L.Trainer(max_steps=warmup + measured, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision=precision, logger=False, enable_checkpointing=False, limit_val_batches=0,
                        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, callbacks=[Clock()])
    trainer.fit(module, datamodule=data)
    return clock.result()


def run_bare_loop(model, tokenizer, records, max_length, warmup, measured, device, precision) -> dict[str, Any]:
    """The floor: the same batches (instructune's sampler + collator), a hand-written step."""
    import torch
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    data = _instructune_data(records, tokenizer, max_length)
    clock = _StepClock(warmup, measured)
    sync = _sync(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)  # as InstructionTuningModule
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, warmup + measured)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    model.train()
    step = 0
    while step < warmup + measured:
        for batch in data.train_dataloader():
            clock.record(batch)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            clock.step_done(step, sync)
            if step == warmup + measured:
                break
    return clock.result()


def _hf_clock_callback(clock: _StepClock, device: str):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(state.global_step, _sync(device))

    return Clock()


def _counting(collator, clock: _StepClock):
    def collate(features):
        batch = collator(features)
        clock.record(batch)
        return batch

    return collate


def _hf_args(out: str, warmup: int, measured: int, device: str, precision: str) -> dict[str, Any]:
    return {"output_dir": out, "per_device_train_batch_size": BATCH_SIZE, "max_steps": warmup + measured,
            "learning_rate": 1e-4, "lr_scheduler_type": "linear", "warmup_steps": 0, "max_grad_norm": 1.0,
            "logging_steps": 10**6, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
            "disable_tqdm": True, "dataloader_num_workers": 0, "seed": 0, "use_cpu": device == "cpu",
            "bf16": precision == "bf16-mixed", "gradient_checkpointing": False}


def run_hf_trainer(model, tokenizer, records, max_length, warmup, measured, device, precision) -> dict[str, Any]:
    """The FLAN-T5 + LoRA tutorial recipe: every example padded to max_length, batch 4, Trainer."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    prompts, responses = _pairs(records)
    texts = [p + r + tokenizer.eos_token for p, r in zip(prompts, responses, strict=True)]
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length)
    labels = [[t if m else -100 for t, m in zip(ids, mask, strict=True)]
              for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
    dataset = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                 "labels": labels})
    clock = _StepClock(warmup, measured)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=TrainingArguments(**_hf_args(out, warmup, measured, device, precision)),
                          train_dataset=dataset, data_collator=_counting(default_data_collator, clock),
                          callbacks=[_hf_clock_callback(clock, device)])
        trainer.train()
    return clock.result()


def run_trl(mode: str, model, tokenizer, records, max_length, warmup, measured, device, precision) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    prompts, responses = _pairs(records)
    dataset = Dataset.from_dict({"prompt": prompts, "completion": responses})
    clock = _StepClock(warmup, measured)
    with tempfile.TemporaryDirectory() as out:
        # padding-free without packing refuses a max_length (it cannot enforce it); the records are
        # already shorter than max_length here, so nothing is cut either way
        args = SFTConfig(**_hf_args(out, warmup, measured, device, precision),
                         max_length=None if mode == "padding_free" else max_length,
                         completion_only_loss=True, packing=mode == "packing", padding_free=mode == "padding_free",
                         dataset_num_proc=None)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=[_hf_clock_callback(clock, device)])
        trainer.data_collator = _counting(trainer.data_collator, clock)
        trainer.train()
    return clock.result()


def _sync(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def worker(args: argparse.Namespace) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    records = _records(args.data)
    model, tokenizer = _model_and_tokenizer(args.model, device)
    import functools

    data = _instructune_data(records, tokenizer, args.max_length) if args.contender == "instructune" else None
    run = {"instructune": functools.partial(run_instructune, data=data), "bare_loop": run_bare_loop,
           "hf_trainer": run_hf_trainer,
           "instructune_packed": functools.partial(run_instructune, packing=True)}.get(args.contender)
    if run is None:
        mode = args.contender.removeprefix("trl_")
        result = run_trl(mode, model, tokenizer, records, args.max_length, args.warmup, args.steps, device, precision)
    else:
        result = run(model, tokenizer, records, args.max_length, args.warmup, args.steps, device, precision)
    if args.contender == "instructune":
        result["flops_per_token"] = _flops_per_real_token(model, tokenizer, data, device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["params"] = sum(p.numel() for p in model.parameters())
    print("RESULT " + json.dumps(result))


def _flops_per_real_token(model, tokenizer, data, device: str) -> float:
    """Forward + backward FLOPs per real token, on one unpadded instructune row of median length."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from instructune.data.collate import CausalCollator

    examples = sorted(data.examples["train"], key=lambda e: len(e.input_ids))
    batch = CausalCollator(tokenizer.pad_token_id)([examples[len(examples) // 2]])
    batch = {k: v.to(device) for k, v in batch.items()}
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["input_ids"].numel()


def memory_worker(args: argparse.Namespace) -> None:
    """Peak RSS of a few full-FT or LoRA steps on a 124M GPT-2 built from config (no download)."""
    import lightning as L
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from instructune.data.tokenizer import load_tokenizer
    from instructune.models.module import InstructionTuningModule, OptimizerConfig
    from instructune.models.strategies import LoRA, Full
    from instructune.world.source import WORLD_GPT2

    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(WORLD_GPT2))
    model = GPT2LMHeadModel(GPT2Config())  # the 124M gpt2 architecture (vocab 50257)
    params = sum(p.numel() for p in model.parameters())
    strategy = LoRA() if args.contender == "lora" else Full()
    model = strategy.apply(model, "causal")
    data = _instructune_data(_records("world"), tokenizer, 256)
    module = InstructionTuningModule(model, "causal", OptimizerConfig(lr=1e-4))
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print("RESULT " + json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                  "params": params, "trainable": trainable}))


# ---------------------------------------------------------------- driver side

def _launch(argv: list[str], timeout: int = 1200) -> dict[str, Any] | str:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return "failed: " + " | ".join(tail)[:300]


def machine() -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    for package in ("transformers", "lightning", "trl", "peft"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    return info


def run_suite(cases: list[tuple], repeats: int, out: Path, only: list[str] | None = None) -> dict[str, Any]:
    """Run the cases (``only``: those whose name contains one of these strings, merged into an
    existing results file) and write the results JSON after each case."""
    import torch

    from instructune.perf import measure_matmul_peak

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak = max(measure_matmul_peak(device, dtype, size=2048 if device == "cuda" else 1024, seconds=s) for s in (1.0, 1.5))
    results: dict[str, Any] = {"machine": machine(), "matmul_peak_flops": peak, "batch_size": BATCH_SIZE,
                               "repeats": repeats, "cases": {}}
    if only and out.is_file():
        earlier = json.loads(out.read_text())
        results["cases"] = earlier["cases"]
        results["matmul_peak_flops"] = max(peak, earlier["matmul_peak_flops"])
    for name, model, data, max_length, warmup, steps in cases:
        if only and not any(o in name for o in only):
            continue
        if data == "instruction-data" and not SHARED_DATA.is_file():
            results["cases"][name] = {"skipped": f"{SHARED_DATA} is absent"}
            continue
        runs: dict[str, list] = {c: [] for c in CONTENDERS}
        for rep in range(repeats):
            for contender in CONTENDERS:  # interleaved: A B C D ..., then again
                r = _launch(["--worker", "--contender", contender, "--model", model, "--data", data,
                             "--max-length", str(max_length), "--warmup", str(warmup), "--steps", str(steps)])
                runs[contender].append(r)
                print(f"[{name}] repeat {rep + 1} {contender}: "
                      f"{r if isinstance(r, str) else round(r['tokens_per_s'])} tok/s", flush=True)
        results["cases"][name] = {"model": model, "data": data, "max_length": max_length, "steps": steps,
                                  "warmup": warmup, "runs": runs}
        out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def run_memory(repeats: int, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "runs": {"full": [], "lora": []}}
    for _ in range(repeats):
        for contender in ("full", "lora"):
            results["runs"][contender].append(_launch(["--worker-memory", "--contender", contender, "--steps", "5"]))
            print(contender, results["runs"][contender][-1], flush=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(results: dict[str, Any]) -> str:
    """Markdown: one block per case, medians over repeats."""
    peak = results["matmul_peak_flops"]
    lines = [f"Measured matmul peak: {peak / 1e9:.1f} GFLOP/s; batch {results['batch_size']}; "
             f"medians of {results['repeats']} interleaved repeats.", ""]
    for name, case in results["cases"].items():
        if "skipped" in case:
            lines += [f"**{name}**: skipped ({case['skipped']})", ""]
            continue
        ok = {c: [r for r in runs if isinstance(r, dict)] for c, runs in case["runs"].items()}
        flops = _median([r["flops_per_token"] for r in ok["instructune"] if "flops_per_token" in r])
        ours = _median([r["tokens_per_s"] for r in ok["instructune"]])
        trl = {c: _median([r["tokens_per_s"] for r in ok[c]]) for c in ok if c.startswith("trl_") and ok[c]}
        best_trl = max(trl, key=trl.get) if trl else None
        params = next((r["params"] for r in ok["instructune"]), 0)
        lines += [f"**{name}** ({params / 1e6:.2f}M parameters, full fine-tuning, max_length {case['max_length']}, "
                  f"{case['steps']} timed steps after {case['warmup']} warm-up)", "",
                  "| contender | real tokens/s (median) | min - max | instructune / it | padding fraction | peak RSS MB "
                  "| MFU | runs ok |",
                  "|---|---|---|---|---|---|---|---|"]
        for c, runs in ok.items():
            if not runs:
                failed = next((r for r in case["runs"][c] if isinstance(r, str)), "no runs").replace("|", "/")
                lines.append(f"| {c} | failed | - | - | - | - | - | 0/{len(case['runs'][c])}: {failed[-160:]} |")
                continue
            tps = _median([r["tokens_per_s"] for r in runs])
            pad = _median([r.get("padding_fraction", float("nan")) for r in runs])
            rss = _median([r["peak_rss_mb"] for r in runs])
            mark = " (best TRL)" if c == best_trl else ""
            spread = [r["tokens_per_s"] for r in runs]
            lines.append(f"| {c}{mark} | {tps:,.0f} | {min(spread):,.0f} - {max(spread):,.0f} | {ours / tps:.2f}x | "
                         f"{pad:.1%} | {rss:,.0f} | "
                         f"{flops * tps / peak:.1%} | {len(runs)}/{len(case['runs'][c])} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["cpu", "gpu", "memory"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--case", nargs="+", default=None, help="only the cases whose name contains one of these")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender")
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.worker_memory:
        return memory_worker(args)
    out = args.out or HERE / "results" / f"{args.suite}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.suite == "memory":
        results = run_memory(args.repeats, out)
        full = _median([r["peak_rss_mb"] for r in results["runs"]["full"] if isinstance(r, dict)])
        lora = _median([r["peak_rss_mb"] for r in results["runs"]["lora"] if isinstance(r, dict)])
        print(f"peak RSS: full {full:,.0f} MB, LoRA {lora:,.0f} MB, ratio {lora / full:.2f}")
        return None
    results = run_suite(CPU_CASES if args.suite == "cpu" else GPU_CASES, args.repeats, out, args.case)
    text = table(results)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return None


if __name__ == "__main__":
    main()
