"""The contenders by name, in the order they run (interleaved) and appear in the table, and why one
cannot run on this machine (recorded as ``skipped: <why>``, never hidden)."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any

from tunebench.contenders import bare_loop, hf_trainer, instructune_fit, trl_sft
from tunebench.workload import Job

RUNNERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "instructune": instructune_fit.run,
    "instructune_packed": functools.partial(instructune_fit.run, packing=True),
    "instructune_packed_compile": functools.partial(instructune_fit.run, packing=True, compile=True),
    "hf_trainer": hf_trainer.run,
    **{f"trl_{mode}": functools.partial(trl_sft.run, mode=mode) for mode in trl_sft.MODES},
    "bare_loop": bare_loop.run,
}
CONTENDERS = list(RUNNERS)
GPU_CONTENDERS = CONTENDERS
# the CPU suite's (results/cpu.json came from these): torch.compile is measured on a GPU only, where its
# minutes of compilation pay off; on a 2-core CPU they would dwarf the timed steps
CPU_CONTENDERS = [c for c in CONTENDERS if c != "instructune_packed_compile"]


def unavailable(contender: str, device: str) -> str | None:
    """Why ``contender`` cannot run on ``device`` here (``None``: it can): TRL is a benchmark-only
    dependency, and the compiled contender needs CUDA."""
    if contender.startswith("trl_") and importlib.util.find_spec("trl") is None:
        return "TRL is not installed (pip install -e '.[bench]')"
    if contender == "instructune_packed_compile" and device != "cuda":
        return "no CUDA device (torch.compile is measured on the GPU suite only)"
    return None
