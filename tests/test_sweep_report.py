"""The sweep report: exact aggregation over seeds on written summaries, and a real multirun."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import yaml

from instructune.sweep_report import collect, write_report


def _job(root, num, overrides, summary):
    job = root / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))


def _ok(em, loss, trainable=100):
    return {"status": "ok", "eval": {"tuned": {"all": em, "seen": em, "held_out": 0.0, "rougeL/all": em},
                                     "base": {"all": 0.0}},
            "metrics": {"val/loss": loss}, "params": {"trainable": trainable}, "wall_seconds": 10.0,
            "throughput": {"real_tokens_per_s": 1000.0 * (1 + em), "mfu": 0.2, "train_seconds": 8.0}}


def test_mean_and_95_ci_over_seeds_and_failed_rows(tmp_path):
    for i, (em, seed) in enumerate([(0.5, 1), (0.6, 2), (0.7, 3)]):
        _job(tmp_path, i, ["peft=lora", f"seed={seed}"], _ok(em, 1.0 + em))
    _job(tmp_path, 3, ["peft=bitfit", "seed=1"], {"status": "failed", "error": "ModelError: needs bias terms"})
    _job(tmp_path, 4, ["peft=ia3", "seed=1"], None)
    rows = collect(tmp_path)
    assert [r.label for r in rows] == ["peft=lora", "peft=bitfit", "peft=ia3"]
    mean, half, n = rows[0].stat("eval.tuned.all")
    # mean 0.6, sd 0.1, t(0.975, 2) = 4.303: half-width 4.303 * 0.1 / sqrt(3)
    assert (n, round(mean, 6), round(half, 6)) == (3, 0.6, round(4.303 * 0.1 / math.sqrt(3), 6))
    report = write_report(tmp_path).read_text()
    assert "| `peft=lora` | 3 | 60.0% ± 24.8 | 60.0% ± 24.8 | 0.0% ± 0.0 | 0.0% ± 0.0 | 60.0% ± 24.8 | 1.600 ± 0.248 | 100 | 10.0 | 1,600 | 20.0% | ok |" in report
    assert "| `peft=bitfit` | 1 | - | - | - | - | - | - | - | - | - | - | 1 failed: failed: ModelError: needs bias terms |" in report
    assert "no summary (killed before it finished?)" in report
    # the two plots these summaries allow (no CSV logs: no validation-loss curve), drawn, not blank
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["cost.png", "exact_match.png"]
    for name in ("cost.png", "exact_match.png"):
        image = plt.imread(tmp_path / name)
        assert image.ndim == 3 and len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 2
