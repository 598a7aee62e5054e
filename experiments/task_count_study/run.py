"""Task-count study: does held-out performance rise with the number of training task families?

    python experiments/task_count_study/run.py                 # the study and its report (~25 min, 2 cores)
    python experiments/task_count_study/run.py --quick         # tiny settings, the same machinery (~2 min)
    python experiments/task_count_study/run.py --report-only   # re-read multirun/task_count_study

Arms: full fine-tuning of the embedded world GPT-2 trained on k = 4, 8, 16, 32 or all 58 seen families of the
version-2 world (``conf/experiment/task_count_study.yaml``), each seed drawing its own nested subsets,
every arm at the same fixed learning rate and step count. Scored on the 12 held-out compositions (pairs
of seen skills no training family combines), the paraphrased items and the trained families, against
the untuned base model (anchors: FLAN and Super-NaturalInstructions report held-out performance rising
with the number of training tasks). ``instructune.world_study_report`` writes report.md and the plot here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from instructune.study import Arm, StudyDesign, study_main
from instructune.world_study_report import task_count_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COUNTS = (4, 8, 16, 32, 58)
LR = 3e-4  # full fine-tuning's rate as the PEFT study tuned it on the version-1 world (3.3e-4), not re-tuned per arm

DESIGN = StudyDesign(
    name="task_count_study",
    base=("experiment=task_count_study",),
    arms=tuple(Arm(f"k={k}", (f"data.source.train_task_count={k}",), (LR,)) for k in COUNTS),
    budgets=(800,),
    seeds=(0, 1, 2),
    tune_lr=False,
    notes={"task_count": {f"k={k}": k for k in COUNTS}},
)
# The same machinery on tiny settings (what the test suite runs).
QUICK = replace(DESIGN, name="task_count_study_quick",
                base=(*DESIGN.base, "data.source.max_items_per_task=30", "eval.max_new_tokens=6",
                      "trainer.val_check_interval=10", "optimizer.warmup_steps=2"),
                arms=tuple(a for a in DESIGN.arms if a.name in ("k=4", "k=16", "k=58")), budgets=(10,), seeds=(0, 1))


def main(argv: list[str] | None = None) -> Path:
    return study_main(argv, __doc__, (DESIGN, QUICK), REPO, HERE, task_count_report, "Task-count study: held-out compositions by number of training task families", "k=4 k=58")


if __name__ == "__main__":
    main()
