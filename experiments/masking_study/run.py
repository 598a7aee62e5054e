"""Masking study: how much weight should the prompt's tokens have in the loss?

    python experiments/masking_study/run.py                 # the study and its report (~25 min, 2 cores)
    python experiments/masking_study/run.py --quick         # tiny settings, the same machinery (~3 min)
    python experiments/masking_study/run.py --report-only   # re-read multirun/masking_study

Arms: the prompt-loss weight lambda (``loss.prompt_weight``) at 0 (``masking=true``), 0.01, 0.1, 0.5 and 1
(``masking=false``), LoRA on the embedded world GPT-2 (``conf/experiment/masking_study.yaml``). Each
arm's learning rate is tuned on the validation split (``instructune.study``: a grid that is extended
until the best rate is inside it), then each arm trains at its own rate with 5 fresh seeds and is scored
on the test split at 150, 300 and 600 steps. ``instructune.study_report`` writes report.md and
learning_curves.png here; the README beside it discusses them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from instructune.study import Arm, StudyDesign, add_study_arguments, parse_study_arguments, run_or_read
from instructune.study_report import write_study_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WEIGHTS = (0, 0.01, 0.1, 0.5, 1)

DESIGN = StudyDesign(
    name="masking_study",
    base=("experiment=masking_study",),
    arms=tuple(Arm(f"λ={w:g}", (f"loss.prompt_weight={w}",), (3e-3, 1e-2, 3e-2)) for w in WEIGHTS),
    budgets=(150, 300, 600),
    seeds=(0, 1, 2, 3, 4),
    baseline="λ=0",
)
# The same machinery on tiny settings (what the test suite runs): 64 training records, short budgets.
QUICK = replace(DESIGN, name="masking_study_quick",
                base=(*DESIGN.base, "data.source.max_train_records=64", "eval.max_examples=16",
                      "eval.selection_max_examples=16", "eval.max_new_tokens=6", "trainer.val_check_interval=20",
                      "optimizer.warmup_steps=2"),
                budgets=(5, 10, 20), seeds=(0, 1), max_extensions=1)


def design_for(quick: bool, arms: list[str] | None) -> StudyDesign:
    design = QUICK if quick else DESIGN
    if arms:
        design = replace(design, arms=tuple(a for a in design.arms if a.name in arms))
    return design


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, "λ=0 λ=1")
    parser.add_argument("--report-dir", type=Path, default=None, help="where report.md goes (default: beside this "
                        "script for the full study, the study folder for --quick or --out)")
    args = parse_study_arguments(parser, argv)
    design = design_for(args.quick, args.arms)
    out = args.out or REPO / "multirun" / design.name
    study = run_or_read(design, out, args.report_only)
    report_dir = args.report_dir or (out if args.quick or args.out else HERE)
    report = write_study_report(study, report_dir, "Masking study: the prompt-loss weight λ, every arm at its own "
                                "learning rate")
    print(report.read_text())
    return report


if __name__ == "__main__":
    main()
