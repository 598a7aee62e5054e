"""Ratio study: when does loss over the prompt help? The masking effect against the instruction/output
length ratio and the number of training records (Shi et al. 2024).

    python experiments/ratio_study/run.py                 # the study and its report (24 runs; ~30 min on 2 idle cores)
    python experiments/ratio_study/run.py --quick         # tiny settings, the same machinery (~3 min)
    python experiments/ratio_study/run.py --report-only   # re-read multirun/ratio_study

Cells: two length levels of the version-2 world, at the two ends of the ratio (``restate``: every answer
restates the request, a long output, prompt/response about 2; ``context``: 12 background sentences before
each instruction and the short answers, about 38) × N = 250 or 2000 training records. Every cell trains with the prompt masked (λ = 0)
and with loss over the whole prompt (λ = 1), three seeds each, full fine-tuning of the embedded world GPT-2 at one
fixed rate (``conf/experiment/ratio_study.yaml``). ``instructune.world_study_report`` fits the masking
effect against log2(ratio) and log2(N) and writes report.md and the plot here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from instructune.study import Arm, StudyDesign, study_main
from instructune.ratio_report import ratio_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LEVELS = {"restate": ("data.source.answer_style=restate",), "context": ("data.source.context_sentences=12",)}
RECORDS = (250, 2000)
LR = 3e-4  # full fine-tuning's rate as the PEFT study tuned it on the version-1 world (3.3e-4), not re-tuned per arm


def _arms(levels: dict[str, tuple[str, ...]], records: tuple[int, ...]) -> tuple[tuple[Arm, ...], dict]:
    arms, cells = [], {}
    for level, overrides in levels.items():
        for n in records:
            for weight in (0, 1):
                name = f"{level} N={n} λ={weight}"
                arms.append(Arm(name, (*overrides, f"data.source.max_train_records={n}", f"loss.prompt_weight={weight}"),
                                (LR,)))
                cells[name] = {"level": level, "n": n, "lambda": weight}
    return tuple(arms), cells


ARMS, CELLS = _arms(LEVELS, RECORDS)
DESIGN = StudyDesign(name="ratio_study", base=("experiment=ratio_study",), arms=ARMS, budgets=(400,),
                     seeds=(0, 1, 2), tune_lr=False, notes={"cells": CELLS}, n_jobs=3)
# The same machinery on tiny settings (what the test suite runs): 2 levels × 2 N × 2 λ, 2 seeds.
_QUICK_ARMS, _QUICK_CELLS = _arms({"restate": LEVELS["restate"], "context": ("data.source.context_sentences=4",)},
                                  (32, 64))
QUICK = replace(DESIGN, name="ratio_study_quick", arms=_QUICK_ARMS, notes={"cells": _QUICK_CELLS},
                base=(*DESIGN.base, "data.source.max_items_per_task=30", "eval.max_examples=24", "eval.max_new_tokens=8",
                      "trainer.val_check_interval=8", "optimizer.warmup_steps=2"),
                budgets=(8,), seeds=(0, 1))


def main(argv: list[str] | None = None) -> Path:
    return study_main(argv, __doc__, (DESIGN, QUICK), REPO, HERE, ratio_report, "Ratio study: the masking effect against instruction/output length and training set size", "'context N=250 λ=0' 'context N=250 λ=1'")


if __name__ == "__main__":
    main()
