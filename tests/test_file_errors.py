"""Files and paths that used to fail with a misleading line (issue 12, point 8): a UTF-8 byte-order
mark, one JSON object instead of a list, a numeric CSV column, a local model path that does not
exist or is not a model folder. Each now loads, or fails with one line that says what is wrong with
that file or path and how to fix it."""

from __future__ import annotations

import codecs
import csv
import json

import pytest

from conftest import train_in_process as train
from instructune.data.records import DataError, DatasetSource
from instructune.models.loading import ModelError, load_model

ROWS = [{"instruction": f"Say word {i}.", "input": "", "output": f"word {i}"} for i in range(40)]
LINES = "".join(json.dumps(r) + "\n" for r in ROWS)
BOM = codecs.BOM_UTF8


def _csv_text(rows, columns=("instruction", "input", "output")) -> str:
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    return "\r\n".join(lines) + "\r\n"


def _load(path) -> list[dict[str, str]]:
    splits = DatasetSource(str(path), seed=0).load()
    return sorted((r for split in splits.values() for r in split), key=lambda r: r["instruction"])


def _fails(path, message: str) -> None:
    with pytest.raises(DataError) as e:
        DatasetSource(str(path)).load()
    assert str(e.value) == message


# --- a UTF-8 byte-order mark (Notepad, Excel "CSV UTF-8") is skipped -------------------------------


@pytest.mark.parametrize("name, text", [("bom.json", json.dumps(ROWS, indent=2)), ("bom.jsonl", LINES),
                                        ("bom.csv", _csv_text(ROWS))])
def test_a_utf8_bom_file_loads_like_the_same_file_without_one(tmp_path, name, text):
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    (tmp_path / "with" / name).write_bytes(BOM + text.encode())
    (tmp_path / "without" / name).write_bytes(text.encode())
    loaded = _load(tmp_path / "with" / name)
    assert loaded == _load(tmp_path / "without" / name)
    assert len(loaded) == 40 and set(loaded[0]) == {"instruction", "input", "output"}


def test_a_bad_byte_after_a_bom_is_counted_from_the_start_of_the_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(BOM + b'[{"instruction": "caf\xe9", "output": "x"}]')
    _fails(path, f"{path}: not valid UTF-8 (byte 24): invalid continuation byte; save it as UTF-8")


@pytest.mark.parametrize("name", ["d.json", "d.csv"])
def test_a_utf16_file_is_named_as_such(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(codecs.BOM_UTF16_LE + _csv_text(ROWS).encode("utf-16-le"))
    _fails(path, f"{path}: the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark); save it as UTF-8")


# --- one JSON object instead of a list of records ---------------------------------------------------


@pytest.mark.parametrize("indent", [2, None])
def test_records_wrapped_in_an_object_name_the_key_and_the_fix(tmp_path, indent):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"version": 2, "data": ROWS}, indent=indent))
    target = tmp_path / "d.records.json"
    _fails(path, f"{path}: holds a JSON object whose 'data' key holds 40 record(s), expected the list of records "
                 f"itself (or JSON Lines); save that list to its own file and point data.path at it, e.g. python -c "
                 f"\"import json; json.dump(json.load(open('{path}', encoding='utf-8-sig'))['data'], "
                 f"open('{target}', 'w'))\" then data.path={target}")


def test_the_suggested_command_writes_a_file_that_loads(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "d.json"
    path.write_bytes(BOM + json.dumps({"data": ROWS}, indent=2).encode())
    with pytest.raises(DataError) as e:
        DatasetSource(str(path)).load()
    command = str(e.value).split('python -c "')[1].split('" then')[0]
    subprocess.run([sys.executable, "-c", command], check=True)
    assert _load(tmp_path / "d.records.json") == sorted(ROWS, key=lambda r: r["instruction"])


def test_a_pretty_printed_object_is_not_json_lines(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS[0], indent=2))
    _fails(path, f"{path}: holds a JSON object, expected a list of records (or JSON Lines: one object a line); "
                 "put the records in [ ... ] or write one record per line")


def test_one_record_on_one_line_is_still_json_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    _fails(path, f"{path}: 1 record(s) split 0.85/0.1/0.05 leaves the train split empty; "
                 "use more data or other data.source.splits fractions")


# --- CSV cells are text: a column of numbers keeps its exact digits ---------------------------------


def test_a_numeric_csv_column_loads_as_the_text_in_the_file(tmp_path):
    values = ["007", "1.50", "42", "-3", "1e3", "", "NA", "null"]
    rows = [{"instruction": str(i), "input": values[i % len(values)], "output": values[(i + 3) % len(values)] or "0"}
            for i in range(40)]
    path = tmp_path / "numbers.csv"
    path.write_text(_csv_text(rows))
    loaded = _load(path)
    assert loaded == sorted(rows, key=lambda r: r["instruction"])
    assert {type(v) for r in loaded for v in r.values()} == {str}


def test_a_quoted_csv_cell_may_hold_commas_and_newlines(tmp_path):
    path = tmp_path / "d.csv"
    rows = [{**r, "output": f"a, b\nline {i}"} for i, r in enumerate(ROWS)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(rows)
    assert _load(path) == sorted(rows, key=lambda r: r["instruction"])


def test_a_csv_row_with_too_many_values_names_its_line(tmp_path):
    path = tmp_path / "d.csv"
    text = _csv_text(ROWS).splitlines()
    text[5] = "Say word 4.,,4, or so"
    path.write_text("\n".join(text) + "\n")
    _fails(path, f"{path}: line 6: 4 values, but the header has 3 columns; quote values that contain a comma")


def test_a_csv_header_naming_a_column_twice(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(_csv_text(ROWS).replace("instruction,input,output", "instruction,output,output", 1))
    _fails(path, f"{path}: the header names column 'output' more than once")


def test_an_empty_csv_output_cell_names_record_and_field(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[6]["output"] = ""
    path = tmp_path / "d.csv"
    path.write_text(_csv_text(rows))
    _fails(path, f"{path}: record 6: field 'output' is empty")


def test_a_json_number_says_how_to_write_it_as_text(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[3]["output"] = 42
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    _fails(path, f'{path}: record 3: field \'output\' must be a string, got int 42; write it as text: "42"')


# --- model paths --------------------------------------------------------------------------------------

_FIX = "set model.name_or_path to an existing folder that holds config.json and the weights, or to a hub name such as gpt2 or org/model"


@pytest.mark.parametrize("given, shown", [("./no/such/folder", "no/such/folder"), ("../missing", None),
                                          ("no/such/folder", "no/such/folder"), ("~/surely-no-such-model", None)])
def test_a_missing_local_model_path_is_not_a_repo_id(tmp_path, monkeypatch, given, shown):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    absolute = {"../missing": tmp_path / "missing", "~/surely-no-such-model": tmp_path / "home" / "surely-no-such-model"}
    where = absolute.get(given) or tmp_path / "cwd" / shown
    with pytest.raises(ModelError) as e:
        load_model(given)
    assert str(e.value) == f"{given}: no such model folder ({where} does not exist); {_FIX}"


def test_a_missing_absolute_model_path(tmp_path):
    with pytest.raises(ModelError) as e:
        load_model(str(tmp_path / "absent"))
    assert str(e.value) == f"{tmp_path / 'absent'}: no such model folder; {_FIX}"


def test_a_folder_without_config_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as e:
        load_model(str(tmp_path / "empty"))
    assert str(e.value) == (f"{tmp_path / 'empty'}: no config.json in this folder, so it is not a Hugging Face model "
                            "folder; set model.name_or_path to the folder that save_pretrained wrote (config.json and "
                            "the weights)")


def test_a_folder_with_the_model_one_level_down_points_there(tmp_path, tiny_dirs):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").symlink_to(tiny_dirs["gpt2"])
    with pytest.raises(ModelError) as e:
        load_model(str(run))
    assert str(e.value) == (f"{run}: no config.json in this folder, so it is not a Hugging Face model folder; "
                            f"{run / 'model'} has one: set model.name_or_path to that folder")
    assert load_model(str(run / "model")).config.model_type == "gpt2"


def test_a_weights_file_instead_of_its_folder(tiny_dirs):
    weights = tiny_dirs["gpt2"] / "model.safetensors"
    with pytest.raises(ModelError) as e:
        load_model(str(weights))
    assert str(e.value) == (f"{weights}: is a file, not a model folder; set model.name_or_path to the folder that "
                            "holds config.json and the weights")


def test_a_hub_name_is_still_asked_of_the_hub(monkeypatch):
    """Offline, a hub name fails at the hub lookup, not at the local-path check."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        load_model("surely-no-such-org/surely-no-such-model")
    assert str(e.value).startswith("surely-no-such-org/surely-no-such-model: could not load the model config: ")


# --- through train.py: one line, exit status 1 ---------------------------------------------------------


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_train_py_reports_a_wrapped_json_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ROWS}, indent=2))
    proc = train("data=json", f"data.path={path}", "logger=none", "eval.base=false", f"hydra.run.dir={tmp_path / 'run'}",
                 capsys=capsys)
    assert proc.returncode == 1
    assert _error_line(proc.stderr).startswith(f"error: {path}: holds a JSON object whose 'data' key holds 40 record(s)")


def test_train_py_reports_a_missing_model_folder_in_one_line(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "folder"
    proc = train(f"model.name_or_path={missing}", "model.tokenizer=${instructune.asset:world-gpt2}", "logger=none",
                 "eval.base=false", f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys)
    assert proc.returncode == 1
    assert _error_line(proc.stderr) == f"error: {missing}: no such model folder; {_FIX}"


def test_train_py_checks_the_model_path_before_the_tokenizer(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "folder"
    proc = train(f"model.name_or_path={missing}", "logger=none", "eval.base=false", f"hydra.run.dir={tmp_path / 'run'}",
                 capsys=capsys)
    assert proc.returncode == 1
    assert _error_line(proc.stderr) == f"error: {missing}: no such model folder; {_FIX}"
