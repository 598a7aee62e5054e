"""Time the default run (`python train.py`, no overrides) a few times on this machine, so the README's
timing is a measured range with its machine, not a single number.

    python experiments/default_run/measure.py --repeats 3     # ~2 min a run on 2 CPU cores

Writes results.json next to itself: per run the wall time, training time, real tokens/s, MFU and the
tuned exact match (the same every run: seeded), plus the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def machine() -> dict[str, object]:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__}


def one_run(folder: Path) -> dict[str, object]:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), f"hydra.run.dir={folder}"], cwd=REPO, check=True,
                   capture_output=True, env={**os.environ, "WANDB_MODE": "offline"})
    summary = json.loads((folder / "summary.json").read_text())
    return {"process_seconds": round(time.perf_counter() - started, 1), "wall_seconds": summary["wall_seconds"],
            "fit_seconds": summary["fit_seconds"], "real_tokens_per_s": summary["throughput"]["real_tokens_per_s"],
            "mfu": summary["throughput"].get("mfu"), "steps": summary["steps"],
            "tuned_exact_match": summary["eval"]["tuned"]["all"], "base_exact_match": summary["eval"]["base"]["all"],
            "tuned": {k: summary["eval"]["tuned"][k] for k in ("all", "seen", "held_out", "paraphrase", "rougeL/all",
                                                              "rougeL/held_out", "chrf/all") if k in summary["eval"]["tuned"]},
            "base": {k: summary["eval"]["base"][k] for k in ("all", "rougeL/all", "rougeL/held_out")
                     if k in summary["eval"]["base"]},
            "n_test": summary["eval"]["tuned"]["n"],
            "test_families": len({k.split("@")[0] for k in summary["eval"]["tuned"] if k.startswith("task/")})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs.append(one_run(Path(tmp) / f"run{i}"))
            print(json.dumps(runs[-1]), flush=True)
    out = {"command": "python train.py", "machine": machine(), "runs": runs}
    (HERE / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    walls = [r["process_seconds"] for r in runs]
    print(f"{len(runs)} runs: {min(walls):.0f}-{max(walls):.0f} s end to end on {out['machine']['cpu']} "
          f"({out['machine']['cores']} cores)")


if __name__ == "__main__":
    main()
