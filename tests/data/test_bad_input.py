"""Bad raw input: one clear error naming file, line and column; or skipped and counted."""

import gzip
import os
import subprocess
import sys

import pytest

from mlctr.data import DataError
from mlctr.data.prepare import prepare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def criteo_lines(synthetic_criteo):
    with open(synthetic_criteo, "rb") as f:
        return f.read().splitlines(keepends=True)[:200]


@pytest.fixture(scope="module")
def avazu_lines(synthetic_avazu):
    with open(synthetic_avazu, "rb") as f:
        return f.read().splitlines(keepends=True)[:200]


def _set(line: bytes, column: int, value: bytes, delimiter=b"\t") -> bytes:
    columns = line.rstrip(b"\n").split(delimiter)
    columns[column] = value
    return delimiter.join(columns) + b"\n"


def _error(tmp_path, dataset, data: bytes, name="train.txt", **kwargs) -> DataError:
    raw = tmp_path / name
    raw.write_bytes(data)
    with pytest.raises(DataError) as error:
        prepare(dataset, str(raw), str(tmp_path / "out"), **kwargs)
    assert str(raw) in str(error.value)
    assert not os.path.exists(tmp_path / "out" / "feature_map.json")
    return error.value


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as error:
        prepare("criteo", str(tmp_path / "nope.txt"), str(tmp_path / "out"))
    assert error.value.reason == "missing_file"
    assert _error(tmp_path, "criteo", b"").reason == "empty_file"
    assert _error(tmp_path, "criteo", gzip.compress(b""), "e.gz").reason == "empty_file"
    assert _error(tmp_path, "avazu", b"id,click\n", "h.csv").reason == "bad_header"


def test_wrong_column_count(tmp_path, criteo_lines):
    lines = list(criteo_lines)
    lines[41] = lines[41].rsplit(b"\t", 1)[0] + b"\n"
    error = _error(tmp_path, "criteo", b"".join(lines))
    assert (error.line, error.reason) == (42, "wrong_column_count")
    assert "expected 40 columns, found 39" in str(error)
    assert str(error).startswith(f"{tmp_path / 'train.txt'}:42: ")


def test_non_integer_in_integer_column(tmp_path, criteo_lines):
    lines = list(criteo_lines)
    lines[7] = _set(lines[7], 4, b"12x")
    error = _error(tmp_path, "criteo", b"".join(lines))
    assert (error.line, error.column, error.column_name) == (8, 5, "I4")
    assert error.reason == "non_integer"
    assert str(error) == f"{tmp_path / 'train.txt'}:8: column 5 (I4): '12x' is not an integer"


def test_label_not_0_or_1(tmp_path, criteo_lines, avazu_lines):
    lines = list(criteo_lines)
    lines[99] = _set(lines[99], 0, b"2")
    error = _error(tmp_path, "criteo", b"".join(lines))
    assert (error.line, error.column, error.reason) == (100, 1, "bad_label")
    lines = list(avazu_lines)
    lines[3] = _set(lines[3], 1, b"yes", b",")
    error = _error(tmp_path, "avazu", b"".join(lines), "train.csv")
    assert (error.line, error.column, error.column_name) == (4, 2, "click")


@pytest.mark.parametrize("hour", [b"14102124", b"14023000", b"1410210", b"14x02100", b""])
def test_malformed_hour(tmp_path, avazu_lines, hour):
    lines = list(avazu_lines)
    lines[10] = _set(lines[10], 2, hour, b",")
    error = _error(tmp_path, "avazu", b"".join(lines), "train.csv")
    assert (error.line, error.column, error.column_name) == (11, 3, "hour")
    assert error.reason == "bad_hour"


def test_truncated_last_line(tmp_path, criteo_lines):
    data = b"".join(criteo_lines)
    error = _error(tmp_path, "criteo", data[:-40])
    assert (error.line, error.reason) == (200, "truncated_last_line")
    assert "truncated last line" in str(error)
    # A complete last row without a final newline is fine.
    raw = tmp_path / "ok.txt"
    raw.write_bytes(data[:-1])
    assert prepare("criteo", str(raw), str(tmp_path / "ok"))["source"]["rows_kept"] == 200


def test_corrupt_gzip(tmp_path, criteo_lines):
    data = gzip.compress(b"".join(criteo_lines) * 20)
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    error = _error(tmp_path, "criteo", bytes(corrupt), "train.txt.gz")
    assert error.reason == "corrupt_gzip" and error.line is not None
    error = _error(tmp_path, "criteo", data[:len(data) // 2], "cut.txt.gz")
    assert error.reason == "corrupt_gzip"


def test_skip_bad_rows_counts_by_reason(tmp_path, criteo_lines):
    lines = list(criteo_lines)
    lines[3] = _set(lines[3], 0, b"x")
    lines[5] = _set(lines[5], 2, b"1.5")
    lines[6] = _set(lines[6], 3, b"abc")
    lines[9] = b"\n"
    lines[12] = lines[12].replace(b"\t", b" ", 3)
    lines[-1] = lines[-1][:30]
    raw = tmp_path / "train.txt"
    raw.write_bytes(b"".join(lines)[:-1])
    feature_map = prepare("criteo", str(raw), str(tmp_path / "out"), skip_bad_rows=True)
    assert feature_map["bad_rows"] == {"skipped": 6, "by_reason": {
        "bad_label": 1, "non_integer": 2, "truncated_last_line": 1, "wrong_column_count": 2}}
    assert feature_map["source"]["rows_kept"] == 194
    assert sum(s["num_examples"] for s in feature_map["splits"].values()) == 194


def test_failed_prepare_keeps_the_previous_dataset(tmp_path, criteo_lines):
    raw = tmp_path / "train.txt"
    raw.write_bytes(b"".join(criteo_lines))
    out = tmp_path / "out"
    prepare("criteo", str(raw), str(out))
    # The dataset's files; .lock names its last holder (pid, time), not the dataset.
    before = {name: (out / name).read_bytes() for name in os.listdir(out)
              if name not in ("vocab", ".lock")}
    raw.write_bytes(b"".join(criteo_lines[:150]) + b"1\t2\n")
    with pytest.raises(DataError, match=":151: "):
        prepare("criteo", str(raw), str(out), overwrite=True)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == ["out", "train.txt"]  # no build left behind


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "mlctr.data.prepare", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_cli_bad_input_one_line_no_traceback(tmp_path, criteo_lines):
    lines = list(criteo_lines)
    lines[20] = _set(lines[20], 13, b"")  # fine: a missing integer
    lines[20] = _set(lines[20], 10, b"--3")
    raw = tmp_path / "train.txt"
    raw.write_bytes(b"".join(lines))
    result = _cli("--dataset=criteo", f"--raw={raw}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {raw}:21: column 11 (I10): '--3' is not an integer")
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error")] == [
        result.stderr.strip().splitlines()[-1]]
    missing = _cli("--dataset=avazu", f"--raw={tmp_path / 'none.csv'}", f"--out={tmp_path / 'o'}")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'none.csv'}: no such file" in missing.stderr
