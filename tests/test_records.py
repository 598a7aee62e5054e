import json
from pathlib import Path

import pytest

from instructune.data.records import DataError, DatasetSource, FieldMap, SplitFractions, split_records

ROWS = [{"instruction": f"task {i}", "input": "" if i % 2 else f"in {i}", "output": f"out {i}"} for i in range(40)]


def _write(tmp_path, fmt: str, rows=ROWS):
    import pandas as pd

    path = tmp_path / f"data.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_every_local_format_loads_and_splits_85_10_5(tmp_path, fmt):
    splits = DatasetSource(str(_write(tmp_path, fmt)), seed=1).load()
    assert {k: len(v) for k, v in splits.items()} == {"train": 34, "test": 2, "validation": 4}
    everything = sorted((r["instruction"], r["input"], r["output"]) for s in splits.values() for r in s)
    assert everything == sorted((r["instruction"], r["input"], r["output"]) for r in ROWS)


def test_split_is_seeded():
    a = split_records(list(ROWS), SplitFractions(), seed=3, where="x")
    b = split_records(list(ROWS), SplitFractions(), seed=3, where="x")
    c = split_records(list(ROWS), SplitFractions(), seed=4, where="x")
    assert a == b and a != c


def test_field_mapping_dolly_style(tmp_path):
    rows = [{"instruction": "q", "context": "c", "response": "r", "category": "qa"}] * 20
    fields = FieldMap(input="context", output="response", task="category")
    splits = DatasetSource(str(_write(tmp_path, "jsonl", rows)), fields=fields).load()
    assert splits["train"][0] == {"instruction": "q", "input": "c", "output": "r", "task": "qa"}


def test_field_mapping_naming_an_absent_column(tmp_path):
    with pytest.raises(DataError, match=r"data.jsonl: field mapping output='response' names a column"):
        DatasetSource(str(_write(tmp_path, "jsonl")), fields=FieldMap(output="response")).load()


def test_bad_records_name_file_record_and_field(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[7]["output"] = "   "
    path = _write(tmp_path, "json", rows)
    with pytest.raises(DataError, match=r"data.json: record 7: field 'output' is empty"):
        DatasetSource(str(path)).load()
    rows[7]["output"] = 5
    with pytest.raises(DataError, match=r"record 7: field 'output' must be a string, got int"):
        DatasetSource(str(_write(tmp_path, "json", rows))).load()
    splits = DatasetSource(str(_write(tmp_path, "json", rows)), skip_invalid=True).load()
    assert sum(len(v) for v in splits.values()) == 39


def test_malformed_json_lines_reports_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "input": "", "output": "b"}\n{"instruction": "a",\n')
    with pytest.raises(DataError, match=r"bad.jsonl: malformed JSON Lines at line 2"):
        DatasetSource(str(path)).load()


def test_missing_file_and_empty_split(tmp_path):
    with pytest.raises(DataError, match=r"nope.json: no such file"):
        DatasetSource(str(tmp_path / "nope.json")).load()
    with pytest.raises(DataError, match="leaves the test split empty"):
        DatasetSource(str(_write(tmp_path, "json", ROWS[:5]))).load()


def _split_folder(tmp_path) -> Path:
    """A dataset folder with its own train (30 records) and test (10) files."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:30]))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[30:]))
    return folder


def test_a_dataset_folder_keeps_its_own_splits(tmp_path):
    """A folder of split files loads through the same load_dataset path as a hub name."""
    splits = DatasetSource(str(_split_folder(tmp_path))).load()
    assert [r["instruction"] for r in splits["test"]] == [f"task {i}" for i in range(30, 40)]
    # validation is carved from train (10%), test is the source's own
    assert len(splits["validation"]) == 3 and len(splits["train"]) == 27


def test_max_train_records_cuts_train_after_the_split_and_leaves_validation_and_test_alone(tmp_path):
    rows = [{"instruction": f"task {i}", "input": "", "output": f"out {i}"} for i in range(100)]
    path = str(_write(tmp_path, "json", rows))
    full = DatasetSource(path, seed=7).load()
    assert {k: len(v) for k, v in full.items()} == {"train": 85, "test": 5, "validation": 10}
    for n in (20, 50):
        cut = DatasetSource(path, seed=7, max_train_records=n).load()
        assert cut["validation"] == full["validation"] and cut["test"] == full["test"]
        assert cut["train"] == full["train"][:n] and len(cut["train"]) == n
    assert DatasetSource(path, seed=7, max_train_records=500).load() == full  # more than there is: all of it


def test_max_records_truncates_before_the_split_so_the_test_set_moves(tmp_path):
    """The documented contrast: max_records slices the file first, then splits what is left."""
    rows = [{"instruction": f"task {i}", "input": "", "output": f"out {i}"} for i in range(100)]
    path = str(_write(tmp_path, "json", rows))
    cut = DatasetSource(path, seed=7, max_records=40).load()
    assert {k: len(v) for k, v in cut.items()} == {"train": 34, "test": 2, "validation": 4}
    assert {r["instruction"] for s in cut.values() for r in s} == {f"task {i}" for i in range(40)}
    assert cut["test"] != DatasetSource(path, seed=7).load()["test"]


def test_max_train_records_keeps_a_folder_s_own_test_split_and_carved_validation(tmp_path):
    folder = _split_folder(tmp_path)
    full = DatasetSource(str(folder)).load()
    cut = DatasetSource(str(folder), max_train_records=5).load()
    assert (cut["validation"], cut["test"], cut["train"]) == (full["validation"], full["test"], full["train"][:5])
