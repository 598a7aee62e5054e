"""The ``instructune`` command: train (the Hydra application of ``python train.py``), then talk to a
tuned run, score it on other data, merge adapters, summarise sweeps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> None:
    from instructune.eval.generate import generate
    from instructune.run_folder import load_tuned

    from instructune.models.limits import positions_left
    from instructune.models.loading import ModelError

    tuned = load_tuned(args.run)
    left = positions_left(tuned.model) if tuned.architecture == "causal" else None
    room = None if left is None else left - args.max_new_tokens  # a longer prompt keeps its end
    if room is not None and room < 1:
        raise ModelError(f"--max-new-tokens={args.max_new_tokens}: the model has {left} positions for prompt and "
                         "answer together")
    instructions = [args.instruction] if args.instruction else (line.rstrip("\n") for line in sys.stdin)
    # a conversation run (data.format=messages): a one-turn chat rendered as in training, cut at its end-of-turn
    chat = tuned.meta.get("format") == "messages" and tuned.architecture == "causal"
    if chat:
        from instructune.data.chat_format import ChatFormat

        render = ChatFormat(tuned.tokenizer)
    for instruction in instructions:
        if not instruction.strip():
            continue
        if chat:
            content = f"{instruction}\n\n{args.input}" if args.input else instruction
            prompt = render.prompt([{"role": "user", "content": content}])
        else:
            prompt = tuned.prompt_style.format(instruction, args.input, tuned.tokenizer)
        print(generate(tuned.model, tuned.tokenizer, [prompt], tuned.architecture, args.max_new_tokens,
                       max_prompt_tokens=room, stop=tuple(tuned.meta.get("stop") or ()),
                       add_special_tokens=not chat)[0], flush=True)


def _merge(args: argparse.Namespace) -> None:
    """LoRA / IA3 adapters folded into the base weights: a plain Hugging Face model folder."""
    from instructune.models.loading import ModelError
    from instructune.models.strategies import STRATEGIES
    from instructune.run_folder import generation_meta, load_tuned, save_model_folder

    tuned = load_tuned(args.run)
    if not tuned.meta["adapter_only"]:
        raise ModelError(f"{args.run}: peft={tuned.meta['peft']} saved a full model already; nothing to merge")
    strategy = STRATEGIES.get(tuned.meta["peft"])
    if strategy is None or not strategy.mergeable:
        why = "adds virtual tokens, which cannot be merged into weights" if strategy and strategy.uses_virtual_tokens \
            else "cannot be merged into the base weights"
        raise ModelError(f"{args.run}: peft={tuned.meta['peft']} {why}")
    merged = tuned.model.merge_and_unload()
    meta = {"base_model": None, "architecture": tuned.architecture, "peft": tuned.meta["peft"],
            "adapter_only": False, "merged": True, **generation_meta(tuned.meta)}
    save_model_folder(args.out, merged, tuned.tokenizer, tuned.prompt_style, meta)
    print(f"merged model saved to {args.out} (instructune generate / evaluate read it like a run folder)")


def _evaluate(args: argparse.Namespace) -> None:
    """Score a tuned run without training: on a file (``--data``, the whole file by default) or on a
    data config's split (Hydra overrides, the test split by default). Never overwrites a result."""
    import json

    from hydra import compose, initialize_config_module

    from instructune.config_check import check_answer_room, check_config
    from instructune.data.records import DataError
    from instructune.entry import CONFIG_NAME, CONFIG_PATH, register_resolvers
    from instructune.models.limits import positions_left
    from instructune.eval.split_evaluation import SplitEvaluation
    from instructune.instantiate import build
    from instructune.run_folder import load_tuned, unused_path

    overrides = list(args.overrides)
    split = args.split
    if split == "all" and args.data is None:
        raise DataError("--split all scores a whole --data file; a data config has train, validation and test")
    if args.data is not None:
        overrides = ["data=json", f"data.path={args.data}", *overrides]
        if split in (None, "all"):  # the whole file, as one split
            overrides += ["data.source.splits.train=0", "data.source.splits.validation=0",
                          "data.source.splits.test=1"]
    register_resolvers()
    with initialize_config_module(config_module=CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=overrides)
    check_config(cfg)
    scored_split = "test" if split in (None, "all") and args.data is not None else split or cfg.eval.split
    tuned = load_tuned(args.run)
    data = build(cfg.data, "data", drop=("name", "path"), tokenizer=tuned.tokenizer, prompt=tuned.prompt_style,
                 architecture=tuned.architecture, packing=False, group_by_length=False)
    data.setup("test")
    if tuned.meta.get("stop") and not data.stop:  # a conversation run on instruction records: stop where it learnt to
        data.stop = tuple(tuned.meta["stop"])
    check_answer_room(cfg.eval.max_new_tokens, positions_left(tuned.model),
                      tuned.meta.get("base_model") or str(args.run))
    evaluation = SplitEvaluation(data, tuned.tokenizer, tuned.architecture, scored_split, cfg.eval.max_examples,
                                 cfg.eval.max_new_tokens, cfg.eval.batch_size, max_length=positions_left(tuned.model))
    scores = evaluation.run(tuned.model, "tuned")
    name = Path(args.data).stem if args.data is not None else cfg.data.name
    label = "all" if args.data is not None and split in (None, "all") else scored_split
    if scores is None:
        raise DataError(f"{args.data or 'data=' + cfg.data.name}: the {label} split is empty")
    out = unused_path(args.out or Path(args.run) / f"eval_{name}_{label}.json")
    out.write_text(json.dumps({"data": args.data or cfg.data.name, "split": label, "overrides": args.overrides,
                               "scores": scores}, indent=2) + "\n")
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


def _export(args: argparse.Namespace) -> None:
    from instructune.export import export_run

    print(export_run(args.run, args.format).message)


def _report(args: argparse.Namespace) -> None:
    from instructune.sweep_report import write_report

    print(f"report written to {write_report(args.sweep, args.out)}")


def _judge(args: argparse.Namespace) -> None:
    from instructune.judge import judge_run, result_lines

    result = judge_run(args.run, args.judge, judge_model=args.judge_model, answer=args.answer, rubric_path=args.rubric,
                       name=args.name, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       timeout=args.timeout, retries=args.retries)
    print("\n".join(result_lines(result)))


def _lm_eval(args: argparse.Namespace) -> None:
    from instructune.lm_eval_harness import headline, options_from_args, run_harness

    out, record = run_harness(args.run, options_from_args(args))
    print("\n".join([*headline(record), f"written to {out}"]))


def main(argv: list[str] | None = None) -> None:
    from instructune.config_check import ConfigError
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
    export = sub.add_parser("export", help="merged Hugging Face folder or ONNX model, with a model card, "
                            "into <run>/export/<format>")
    export.add_argument("run", type=Path, help="run folder (or its model/ folder)")
    export.add_argument("--format", choices=["hf", "onnx"], default="hf",
                        help="hf: adapter merged, safetensors + tokenizer (default); onnx: model.onnx, logits, no KV cache")
    evaluate = sub.add_parser("evaluate", help="score a run on a file or a data config's split, without training")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=alpaca eval.max_examples=500")
    evaluate.add_argument("--data", default=None, help="a JSON / JSONL / CSV / Parquet file (or hub dataset) to score")
    evaluate.add_argument("--split", choices=["train", "validation", "test", "all"], default=None,
                          help="default: the whole --data file, else the config's eval.split (test)")
    evaluate.add_argument("--out", type=Path, default=None)
    report = sub.add_parser("report", help="summarise a multirun folder into report.md and PNG plots")
    report.add_argument("sweep", type=Path, help="the sweep folder (outputs/<task>/multiruns/<time>)")
    report.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep folder)")
    judge = sub.add_parser("judge", help="score each test answer 0 to 100 with a judge model (rubric prompt)")
    judge.add_argument("run", type=Path, help="run folder with predictions.jsonl")
    judge.add_argument("--judge", required=True, help="local model folder, or OpenAI-compatible base URL "
                       "(http://127.0.0.1:8000/v1; OPENAI_API_KEY is sent when set)")
    judge.add_argument("--judge-model", default=None, help="model at the URL (default: the first {url}/models lists)")
    judge.add_argument("--answer", choices=["tuned", "base"], default="tuned")
    judge.add_argument("--rubric", type=Path, default=None, help="prompt file with {instruction} {input} {prompt} "
                       "{reference} {response} (default: the book's rubric)")
    judge.add_argument("--name", default=None, help="result name under <run>/judge/ (default: the judge's name)")
    judge.add_argument("--max-new-tokens", type=int, default=16)
    judge.add_argument("--batch-size", type=int, default=8, help="local judges: prompts per generate call")
    judge.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    judge.add_argument("--retries", type=int, default=5, help="HTTP retries on 408/429/5xx and timeouts")
    lm_eval = sub.add_parser("lm-eval", help="EleutherAI's lm-evaluation-harness on a run, into <run>/lm_eval/")
    lm_eval.add_argument("run", type=Path, help="run folder (or its model/ folder)")
    lm_eval.add_argument("--tasks", required=True, help="comma-separated lm-eval tasks / groups / globs, e.g. "
                         "world_capitals (the embedded world's, offline) or hellaswag,arc_easy")
    lm_eval.add_argument("--num-fewshot", type=int, default=None, help="default: each task's own (0 if unset)")
    lm_eval.add_argument("--limit", default=None, help="documents per task (or a fraction below 1): for quick looks")
    lm_eval.add_argument("--batch-size", default="8", help="an integer, or auto")
    lm_eval.add_argument("--include-path", type=Path, action="append", default=[],
                         help="a folder of extra task YAML files (repeatable; the world's tasks are always on)")
    lm_eval.add_argument("--apply-chat-template", action="store_true",
                         help="wrap prompts in the tokenizer's chat template (matches runs trained with prompt style chat)")
    lm_eval.add_argument("--merge", action="store_true", help="fold a LoRA / IA3 adapter into the weights first")
    lm_eval.add_argument("--base", action="store_true", help="score the run's base model instead (before / after)")
    lm_eval.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    lm_eval.add_argument("--log-samples", action="store_true", help="also write each document's requests and "
                         "responses to <result>.samples.jsonl")
    args, extra = parser.parse_known_args(argv)
    if args.command == "evaluate" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # overrides after an option (`--data f.json eval.max_examples=50`)
    elif extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    try:
        {"generate": _generate, "merge": _merge, "evaluate": _evaluate, "report": _report,
         "judge": _judge, "export": _export, "lm-eval": _lm_eval}[args.command](args)
    except (ConfigError, DataError, ModelError, PromptStyleError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
