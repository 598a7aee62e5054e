"""How a sweep ends: every job runs even when some fail, each failure is one line as it happens, and
the sweep's exit status says whether all jobs succeeded, with the list of those that did not.

Hydra's own sweepers raise the first failed job's exception after the batch, with its traceback and
nothing about the others; so a failing job is reported and recorded here instead (its summary.json
says failed and why), and ``SweepOutcome.on_multirun_end`` turns the records into the exit status.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from instructune.run_folder import job_overrides, read_summary, sweep_jobs

log = logging.getLogger("instructune")


def report_failed_job(job_num: int, overrides: str, error: BaseException, job_dir: Path) -> None:
    """One line on stderr (the traceback too with HYDRA_FULL_ERROR=1; always in the job's train.log)."""
    line = f"job {job_num} ({overrides or 'no overrides'}) failed: {type(error).__name__}: {error}"
    with (job_dir / "train.log").open("a") as f:  # Hydra's console would show a logged traceback too
        f.write(f"{line}\n{''.join(traceback.format_exception(error))}")
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(error, file=sys.stderr)
    print(f"error: {line}", file=sys.stderr, flush=True)


def failed_jobs(sweep_dir: Path) -> list[str]:
    """One line per job whose summary.json is missing or not ok."""
    lines = []
    for i, job in enumerate(sweep_jobs(sweep_dir)):
        summary = read_summary(job)
        if summary is None or summary.get("status") != "ok":
            reason = (summary or {}).get("error", "no summary.json (killed?)")
            lines.append(f"  job {job.name.split('_')[0] if '_' in job.name else i} "
                         f"({' '.join(job_overrides(job))}): {reason}")
    return lines


class SweepOutcome(Callback):
    """Registered in conf/hydra/default.yaml: after the last job, exit non-zero if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        failed = failed_jobs(sweep_dir)
        total = len(sweep_jobs(sweep_dir))
        if failed:
            print(f"error: {len(failed)} of {total} sweep jobs failed:\n" + "\n".join(failed), file=sys.stderr,
                  flush=True)
            sys.exit(1)
        log.info("sweep: all %d jobs succeeded (%s)", total, sweep_dir)
