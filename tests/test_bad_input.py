"""The bad-input catalogue: every case ends `python train.py` with exit status 1 and one clear
line (file, record index and field where they exist), never a traceback from inside a library.

The cases run train.py's own Hydra entry point in this process (conftest.train_in_process) to keep
the catalogue fast; test_train_entry.py runs one of them as a real subprocess.
"""

from __future__ import annotations

import json

import pytest

from conftest import train_in_process as train

GOOD = [{"instruction": f"Say word {i}.", "input": "", "output": f"word {i}"} for i in range(40)]


def _json(rows) -> str:
    return json.dumps(rows)


def _with(i: int, **fields) -> str:
    rows = [dict(r) for r in GOOD]
    rows[i].update(fields)
    for k, v in list(fields.items()):
        if v is _DROP:
            del rows[i][k]
    return _json(rows)


_DROP = object()

# name: (file name, file content (str or bytes) or None, overrides, expected text in the error line)
CASES = {
    "missing file": ("absent.json", None, [], "absent.json: no such file"),
    "malformed JSON": ("bad.json", '[{"instruction": "a", "output": "b"},\n {"instruction": }]', [],
                       "bad.json: malformed JSON at line 2"),
    "malformed JSONL": ("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "a", \n', [],
                        "bad.jsonl: malformed JSON Lines at line 2"),
    "missing instruction": ("d.json", _with(3, instruction=_DROP), [], "d.json: record 3: field 'instruction' is missing"),
    "missing output": ("d.json", _with(5, output=_DROP), [], "d.json: record 5: field 'output' is missing"),
    "non-string field": ("d.json", _with(2, output=5), [], "d.json: record 2: field 'output' must be a string, got int"),
    "null field": ("d.json", _with(1, instruction=None), [], "d.json: record 1: field 'instruction' is missing or null"),
    "list field": ("d.json", _with(7, input=["x"]), [], "d.json: record 7: field 'input' must be a string, got list"),
    "empty output": ("d.json", _with(4, output="  "), [], "d.json: record 4: field 'output' is empty"),
    "absent column": ("d.json", _json(GOOD), ["data.source.fields.output=response"],
                      "d.json: field mapping output='response' names a column the data does not have"),
    "empty after filtering": ("d.json", _json([{**r, "output": ""} for r in GOOD]), ["data.source.skip_invalid=true"],
                              "d.json: no valid record left after skipping 40 invalid one(s)"),
    "every response truncated": ("d.json", _json(GOOD), ["data.max_seq_length=8"],
                                 "every one of 34 record(s) was dropped by max_seq_length=8"),
    "non-UTF-8": ("d.json", b'[{"instruction": "caf\xe9", "output": "x"}]', [], "d.json: not valid UTF-8 (byte 21)"),
    "empty split": ("d.json", _json(GOOD[:5]), [], "d.json: 5 record(s) split 0.85/0.1/0.05 leaves the test split empty"),
    "bad fractions": ("d.json", _json(GOOD), ["data.source.splits.train=0.9"], "split fractions must be non-negative and sum to 1"),
    "unknown prompt style": ("d.json", _json(GOOD), ["data.prompt.style=nope"],
                             "data.prompt.style='nope': must be alpaca | phi3 | flan | chat | custom"),
    "custom template without instruction": ("d.json", _json(GOOD), ["data.prompt.style=custom"],
                                            "prompt style 'custom' needs data.prompt.template"),
    "zero virtual tokens": ("d.json", _json(GOOD), ["peft=prompt", "peft.num_virtual_tokens=0"],
                            "peft.num_virtual_tokens=0: must be an integer >= 1"),
    "packing with prompt tuning": ("d.json", _json(GOOD), ["peft=prompt", "data.packing=true"],
                                   "data.packing=true cannot be combined with peft=prompt"),
    "packing a seq2seq model": ("d.json", _json(GOOD), ["model=world-t5", "data.packing=true"],
                                "data.packing: only causal models can be packed"),
    "unknown strategy option": ("d.json", _json(GOOD), ["peft=lora", "+peft.rank=4"],
                                "peft=lora: unknown key peft.rank: in neither LoRA's fields (lr, base_quantization, r, "
                                "alpha, dropout, target_modules) nor peft's LoraConfig"),
}
HYDRA_CASES = {  # unknown config group options: Hydra's own message, no traceback
    "unknown peft": (["peft=nope"], "Could not find 'peft/nope'"),
    "unknown model": (["model=gpt5"], "Could not find 'model/gpt5'"),
    "unknown data": (["data=nope"], "Could not find 'data/nope'"),
}


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_and_settings(tmp_path, case, capsys):
    name, content, overrides, expected = CASES[case]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    proc = train("data=json", f"data.path={path}", "logger=none", "eval.base=false", *overrides,
                 f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert expected in _error_line(proc.stderr)


@pytest.mark.parametrize("case", sorted(HYDRA_CASES))
def test_unknown_group_options(tmp_path, case, capsys):
    overrides, expected = HYDRA_CASES[case]
    proc = train(*overrides, f"hydra.run.dir={tmp_path}", capsys=capsys)
    assert proc.returncode == 1 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_model_errors(tmp_path, tiny_dirs, capsys):
    (tmp_path / "no-weights").mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "no-weights" / f).write_text((tiny_dirs["gpt2"] / f).read_text())
    cases = [
        ([f"model.name_or_path={tmp_path / 'no-weights'}"], "no-weights: the folder has config.json but no weights"),
        ([f"model.name_or_path={tiny_dirs['llama']}", "peft=bitfit"],
         "peft=bitfit needs bias terms, and this llama model has none"),
        ([f"model.name_or_path={tiny_dirs['gpt2']}", "data.prompt.style=chat"],
         "prompt style 'chat' needs a tokenizer with a chat template"),
        ([f"model.name_or_path={tiny_dirs['t5']}"], "a t5 model is seq2seq, but model.architecture=causal"),
    ]
    for overrides, expected in cases:
        proc = train(*overrides, "logger=none", "eval.base=false", "data.source.max_train_records=8",
                     f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert expected in _error_line(proc.stderr)


def test_a_failing_run_leaves_earlier_files_alone(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"earlier checkpoint")
    (run / "summary.json").write_text('{"status": "ok"}')
    (run / "config.yaml").write_text("earlier: config\n")
    proc = train("data=json", f"data.path={tmp_path / 'absent.json'}", "logger=none", f"hydra.run.dir={run}",
                 capsys=capsys)
    assert proc.returncode == 1
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"earlier checkpoint"
    assert (run / "summary.json").read_text() == '{"status": "ok"}'
    assert (run / "config.yaml").read_text() == "earlier: config\n"
    assert json.loads((run / "summary.failed.json").read_text())["status"] == "failed"
