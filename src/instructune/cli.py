"""The ``instructune`` command: train (the Hydra application of ``python train.py``), then talk to a
tuned run, score it on other data, merge adapters, summarise sweeps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> None:
    from instructune.eval.generate import generate
    from instructune.run_folder import load_tuned

    tuned = load_tuned(args.run)
    instructions = [args.instruction] if args.instruction else (line.rstrip("\n") for line in sys.stdin)
    for instruction in instructions:
        if not instruction.strip():
            continue
        prompt = tuned.prompt_style.format(instruction, args.input, tuned.tokenizer)
        print(generate(tuned.model, tuned.tokenizer, [prompt], tuned.architecture, args.max_new_tokens)[0], flush=True)


def _merge(args: argparse.Namespace) -> None:
    """LoRA / IA3 adapters folded into the base weights: a plain Hugging Face model folder."""
    from instructune.run_folder import load_tuned
    from instructune.models.loading import ModelError
    from instructune.models.strategies import STRATEGIES

    tuned = load_tuned(args.run)
    if not tuned.meta["adapter_only"]:
        raise ModelError(f"{args.run}: peft={tuned.meta['peft']} saved a full model already; nothing to merge")
    strategy = STRATEGIES.get(tuned.meta["peft"])
    if strategy is None or not strategy.mergeable:
        why = "adds virtual tokens, which cannot be merged into weights" if strategy and strategy.uses_virtual_tokens \
            else "cannot be merged into the base weights"
        raise ModelError(f"{args.run}: peft={tuned.meta['peft']} {why}")
    merged = tuned.model.merge_and_unload()
    args.out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(args.out)
    tuned.tokenizer.save_pretrained(args.out)
    tuned.prompt_style.save(args.out)
    print(f"merged model saved to {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    """Score a tuned run on the test split of any data config (Hydra overrides), without training."""
    import json

    from hydra import compose, initialize_config_module

    from instructune.data.records import DataError
    from instructune.entry import CONFIG_NAME, CONFIG_PATH, register_resolvers
    from instructune.eval.split_evaluation import SplitEvaluation
    from instructune.run_folder import load_tuned
    from instructune.train import build

    register_resolvers()
    with initialize_config_module(config_module=CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=args.overrides)
    tuned = load_tuned(args.run)
    data = build(cfg.data, "data", drop=("name", "path"), tokenizer=tuned.tokenizer, prompt=tuned.prompt_style,
                 architecture=tuned.architecture, packing=False, group_by_length=False)
    data.setup("test")
    evaluation = SplitEvaluation(data, tuned.tokenizer, tuned.architecture, cfg.eval.split,
                                     cfg.eval.max_examples, cfg.eval.max_new_tokens, cfg.eval.batch_size)
    scores = evaluation.run(tuned.model, "tuned")
    if scores is None:
        raise DataError(f"data={cfg.data.name}: the {cfg.eval.split} split is empty")
    out = args.out or Path(args.run) / f"eval_{cfg.data.name}.json"
    out.write_text(json.dumps({"data": cfg.data.name, "split": cfg.eval.split, "scores": scores}, indent=2) + "\n")
    print(f"exact match {100 * scores['all']:.1f}% on {scores['n']} examples "
          f"(ROUGE-L {100 * scores['rougeL/all']:.1f}%); written to {out}")


def _train(overrides: list[str]) -> None:
    """Hydra reads ``sys.argv``, so the ``train`` word is hidden from it while it parses; it is put
    back before the job runs, because Lightning's DDP launcher re-runs the command line as typed."""
    from instructune.entry import train_app

    typed = list(sys.argv)
    sys.argv = [typed[0], *overrides]

    def restore_argv() -> None:
        sys.argv = typed

    train_app(before_job=restore_argv)


def _report(args: argparse.Namespace) -> None:
    from instructune.sweep_report import write_report

    print(f"report written to {write_report(args.sweep, args.out)}")


def main(argv: list[str] | None = None) -> None:
    from instructune.data.prompts import PromptStyleError
    from instructune.data.records import DataError
    from instructune.models.loading import ModelError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        _train(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="instructune", description="instruction-tuning research framework")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train and evaluate: exactly `python train.py [overrides]` (Hydra; -m to sweep)",
                   add_help=False)
    gen = sub.add_parser("generate", help="answer an instruction (or one per stdin line) with a tuned run")
    gen.add_argument("run", type=Path, help="run folder (or its model/ folder)")
    gen.add_argument("instruction", nargs="?", help="omit to read instructions line by line from stdin")
    gen.add_argument("--input", default="", help="the record's input field")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    merge = sub.add_parser("merge", help="merge a LoRA / IA3 adapter into its base model")
    merge.add_argument("run", type=Path)
    merge.add_argument("out", type=Path)
    evaluate = sub.add_parser("evaluate", help="score a run on a data config's test split, without training")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=json data.path=my.json")
    evaluate.add_argument("--out", type=Path, default=None)
    report = sub.add_parser("report", help="summarise a multirun folder into report.md and PNG plots")
    report.add_argument("sweep", type=Path, help="the sweep folder (outputs/<task>/multiruns/<time>)")
    report.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        {"generate": _generate, "merge": _merge, "evaluate": _evaluate, "report": _report}[args.command](args)
    except (DataError, ModelError, PromptStyleError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
