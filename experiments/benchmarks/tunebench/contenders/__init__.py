"""The contenders by name, in the order they run (interleaved) and appear in the table."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tunebench.contenders import bare_loop, hf_trainer, instructune_fit, trl_sft
from tunebench.workload import Job

RUNNERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "instructune": instructune_fit.run,
    "instructune_packed": functools.partial(instructune_fit.run, packing=True),
    "hf_trainer": hf_trainer.run,
    **{f"trl_{mode}": functools.partial(trl_sft.run, mode=mode) for mode in trl_sft.MODES},
    "bare_loop": bare_loop.run,
}
CONTENDERS = list(RUNNERS)
