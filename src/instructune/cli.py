"""The ``instructune`` command: talk to a tuned run, merge adapters, rebuild the world.
Training itself runs through ``python train.py`` (Hydra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> None:
    from instructune.eval.generate import generate
    from instructune.eval.run_folder import load_tuned

    tuned = load_tuned(args.run)
    instructions = [args.instruction] if args.instruction else (line.rstrip("\n") for line in sys.stdin)
    for instruction in instructions:
        if not instruction.strip():
            continue
        prompt = tuned.prompt_style.format(instruction, args.input, tuned.tokenizer)
        print(generate(tuned.model, tuned.tokenizer, [prompt], tuned.architecture, args.max_new_tokens)[0], flush=True)


def _merge(args: argparse.Namespace) -> None:
    """LoRA / IA3 adapters folded into the base weights: a plain Hugging Face model folder."""
    from instructune.eval.run_folder import load_tuned
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

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from instructune.data.datamodule import InstructionDataModule
    from instructune.data.records import DataError
    from instructune.entry import register_resolvers
    from instructune.eval.run_folder import load_tuned
    from instructune.eval.split_evaluation import SplitEvaluation

    conf = Path(__file__).resolve().parents[2] / "conf"
    if not conf.is_dir():
        raise FileNotFoundError(f"{conf}: the config folder is missing (install from a clone with pip install -e .)")
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
    tuned = load_tuned(args.run)
    data = InstructionDataModule(instantiate(cfg.data.source), tuned.tokenizer, tuned.prompt_style,
                                 architecture=tuned.architecture, max_seq_length=cfg.data.max_seq_length)
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


def _report(args: argparse.Namespace) -> None:
    from instructune.sweep_report import write_report

    print(f"report written to {write_report(args.sweep, args.out)}")


def main(argv: list[str] | None = None) -> None:
    from instructune.data.prompts import PromptStyleError
    from instructune.data.records import DataError
    from instructune.models.loading import ModelError

    parser = argparse.ArgumentParser(prog="instructune", description="instruction-tuning research framework")
    sub = parser.add_subparsers(dest="command", required=True)
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
    sub.add_parser("build-world", help="rebuild the embedded world, tokenizer and base model", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "build-world":
        from instructune.world.build import main as build_main

        build_main(rest)
        return
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        {"generate": _generate, "merge": _merge, "evaluate": _evaluate, "report": _report}[args.command](args)
    except (DataError, ModelError, PromptStyleError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
