"""PEFT study: full fine-tuning, LoRA, prefix tuning, prompt tuning, IA3 and BitFit, each at its own
tuned learning rate, on the embedded GPT-2 and T5 bases.

    python experiments/peft_study/run.py                    # both families and their reports (~50 min, 2 cores)
    python experiments/peft_study/run.py --family gpt2      # one family
    python experiments/peft_study/run.py --quick            # tiny settings, the same machinery
    python experiments/peft_study/run.py --report-only

Per family, every strategy is an arm (``conf/experiment/peft_study_<family>.yaml``): its learning rate is
tuned on the validation split from a grid around its own default (``conf/peft/<name>.yaml``: 1/3, 1 and
3 times it), extended by ``instructune.study`` until the best rate is inside the grid; then each
strategy trains at its rate with 5 fresh seeds and is scored on the test split at 100, 200 and 400
steps, compared with full fine-tuning (paired by seed and item). Reports: report_<family>.md and
learning_curves_<family>.png beside this script; the README discusses them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from instructune.study import Arm, StudyDesign, add_study_arguments, parse_study_arguments, run_or_read
from instructune.study_report import write_study_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAMILIES = {  # family -> (title, strategies: T5 has no bias terms, so no BitFit)
    "gpt2": ("GPT-2 (causal, 1.09M)", ("full", "lora", "prefix", "prompt", "ia3", "bitfit")),
    "t5": ("T5 (seq2seq, 1.18M)", ("full", "lora", "prefix", "prompt", "ia3")),
}
TINY = ("data.source.max_train_records=64", "eval.max_examples=16", "eval.selection_max_examples=16",
        "eval.max_new_tokens=6", "trainer.val_check_interval=20", "optimizer.warmup_steps=2")


def default_lr(strategy: str) -> float:
    """The strategy's own default rate, from the config group the runs use."""
    import instructune.conf

    return float(OmegaConf.load(Path(instructune.conf.__file__).parent / "peft" / f"{strategy}.yaml")["lr"])


def design(family: str, quick: bool = False) -> StudyDesign:
    _, strategies = FAMILIES[family]
    arms = tuple(Arm(s, (f"peft={s}",), tuple(default_lr(s) * k for k in (1 / 3, 1, 3))) for s in strategies)
    full = StudyDesign(name=f"peft_study_{family}", base=(f"experiment=peft_study_{family}",), arms=arms,
                       budgets=(100, 200, 400), seeds=(0, 1, 2, 3, 4), baseline="full")
    if not quick:
        return full
    return replace(full, name=f"peft_study_{family}_quick", base=(*full.base, *TINY), budgets=(5, 10, 20),
                   seeds=(0, 1), max_extensions=1)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    add_study_arguments(parser, "full lora")
    args = parse_study_arguments(parser, argv)
    reports = []
    for family in FAMILIES if args.family == "all" else [args.family]:
        chosen = design(family, args.quick)
        if args.arms:
            chosen = replace(chosen, arms=tuple(a for a in chosen.arms if a.name in args.arms))
        out = (args.out or REPO / "multirun") / chosen.name
        study = run_or_read(chosen, out, args.report_only)
        report_dir = out if args.quick or args.out else HERE
        report = write_study_report(study, report_dir, f"PEFT study, {FAMILIES[family][0]}: every strategy at its "
                                    "own learning rate", suffix="" if args.quick else f"_{family}")
        print(report.read_text())
        reports.append(report)
    return reports


if __name__ == "__main__":
    main()
