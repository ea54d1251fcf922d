"""criteo_1tb: day files, the MLPerf split, per-process train days, bad input."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlctr.data import DataError, criteo_1tb, encode_raw
from mlctr.data.prepare import prepare
from mlctr.data.reader import PreparedDataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _line(rng, day: int, row: int) -> str:
    # Integers may be negative in the 1TB logs; categoricals are hex strings.
    ints = [str(int(v)) if v > -3 else "" for v in rng.integers(-4, 40, 13)]
    strs = [f"{int(v):08x}" if v else "" for v in rng.integers(0, 200, 26)]
    strs[-1] = f"{day:04x}{row:04x}"  # where the row came from, readable in the keys
    return "\t".join([str(int(rng.random() < 0.25))] + ints + strs) + "\n"


def _days(directory, rows_per_day=(5, 7), gz_days=(3,), eval_rows=9):
    """Tiny day_0 .. day_23 files; returns {day: its lines}."""
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    lines = {}
    for day in range(criteo_1tb.NUM_DAYS):
        count = eval_rows if day == criteo_1tb.EVAL_DAY else rows_per_day[day % len(rows_per_day)]
        lines[day] = [_line(rng, day, r) for r in range(count)]
        data = "".join(lines[day]).encode()
        if day in gz_days:
            with gzip.open(os.path.join(directory, f"day_{day}.gz"), "wb") as f:
                f.write(data)
        else:
            with open(os.path.join(directory, f"day_{day}"), "wb") as f:
                f.write(data)
    return lines


def test_mlperf_split_days_and_halves(tmp_path):
    lines = _days(tmp_path / "raw")
    out = str(tmp_path / "data")
    feature_map = prepare("criteo_1tb", str(tmp_path / "raw"), out, vocab_mode="hash",
                          hash_buckets=1 << 16, max_rows=criteo_1tb.MLPERF_MAX_ROWS)
    splits = feature_map["splits"]
    train_rows = sum(len(lines[d]) for d in criteo_1tb.TRAIN_DAYS)
    assert [splits[s]["num_examples"] for s in ("train", "valid", "test")] == [train_rows, 4, 5]
    assert feature_map["split"]["train_days"] == list(range(23))
    assert set(feature_map["source"]["files"]) == {f"day_{d}" for d in range(24) if d != 3} | {
        "day_3.gz"}
    dataset = PreparedDataset(out, expected_dataset="criteo_1tb")
    # Each split holds exactly the lines it should, in file order: encode the day files
    # one by one with the dataset's hashed ids and compare.
    day_ids = {d: encode_raw(out, criteo_1tb.day_file(str(tmp_path / "raw"), d))[0]
               for d in range(24)}
    np.testing.assert_array_equal(dataset.arrays("train")[0],
                                  np.concatenate([day_ids[d] for d in range(23)]))
    np.testing.assert_array_equal(dataset.arrays("test")[0], day_ids[23][:5])  # first half
    np.testing.assert_array_equal(dataset.arrays("valid")[0], day_ids[23][5:])
    labels = [int(line[0]) for line in lines[23]]
    assert dataset.labels("test").tolist() == labels[:5]


def test_two_processes_prepare_their_own_train_days(tmp_path):
    _days(tmp_path / "raw")
    raw = str(tmp_path / "raw")
    assert criteo_1tb.train_days(0, 2) == list(range(0, 23, 2))
    assert criteo_1tb.train_days(1, 2) == list(range(1, 23, 2))
    maps, trains = [], []
    for p in range(2):
        maps.append(prepare("criteo_1tb", raw, str(tmp_path / f"p{p}"), vocab_mode="hash",
                            hash_buckets=4096, process_index=p, process_count=2))
        trains.append(PreparedDataset(str(tmp_path / f"p{p}")).arrays("train")[0])
    single = prepare("criteo_1tb", raw, str(tmp_path / "all"), vocab_mode="hash",
                     hash_buckets=4096)
    whole = PreparedDataset(str(tmp_path / "all"))
    assert [m["split"]["train_days"] for m in maps] == [criteo_1tb.train_days(p, 2)
                                                        for p in range(2)]
    # Together the two shards are the single process's train rows, every id the same
    # (the hash needs no shared state); both hold all of day 23.
    day_of = lambda ids: set(map(tuple, ids))  # noqa: E731
    assert day_of(trains[0]) | day_of(trains[1]) == day_of(whole.arrays("train")[0])
    assert not day_of(trains[0]) & day_of(trains[1])
    assert len(trains[0]) + len(trains[1]) == single["splits"]["train"]["num_examples"]
    for split in ("valid", "test"):
        for p in range(2):
            np.testing.assert_array_equal(
                PreparedDataset(str(tmp_path / f"p{p}")).arrays(split)[0],
                whole.arrays(split)[0])
    assert maps[0]["vocab_size"] == maps[1]["vocab_size"] == single["vocab_size"]


def test_fit_mode_single_process_only(tmp_path):
    _days(tmp_path / "raw")
    raw = str(tmp_path / "raw")
    feature_map = prepare("criteo_1tb", raw, str(tmp_path / "fit"), protocol="x4_002")
    assert "vocab" not in feature_map and feature_map["min_count"] == 2
    PreparedDataset(str(tmp_path / "fit"))
    with pytest.raises(ValueError, match="needs vocab_mode='hash'"):
        prepare("criteo_1tb", raw, str(tmp_path / "x"), process_index=0, process_count=2)
    with pytest.raises(ValueError, match="more processes than the 23 train days"):
        prepare("criteo_1tb", raw, str(tmp_path / "x"), vocab_mode="hash", process_count=24)
    with pytest.raises(ValueError, match="are for dataset='criteo_1tb'"):
        prepare("criteo", os.path.join(raw, "day_0"), str(tmp_path / "x"), process_count=2)


def test_missing_day_file_names_it(tmp_path):
    _days(tmp_path / "raw")
    os.remove(tmp_path / "raw" / "day_17")
    with pytest.raises(DataError) as error:
        prepare("criteo_1tb", str(tmp_path / "raw"), str(tmp_path / "data"),
                vocab_mode="hash", process_index=0, process_count=2)  # day 17 is process 1's
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "raw" / "day_17") in message
    assert "missing day file" in message and error.value.reason == "missing_file"
    assert not os.path.exists(tmp_path / "data" / "feature_map.json")
    with pytest.raises(DataError, match="not a directory"):
        prepare("criteo_1tb", str(tmp_path / "nowhere"), str(tmp_path / "data"),
                vocab_mode="hash")


def test_bad_lines_name_file_line_and_column(tmp_path):
    lines = _days(tmp_path / "raw")
    raw = tmp_path / "raw"
    bad = lines[5][:]
    bad[2] = bad[2].rsplit("\t", 1)[0] + "\n"  # 39 columns
    (raw / "day_5").write_text("".join(bad))
    with pytest.raises(DataError) as error:
        prepare("criteo_1tb", str(raw), str(tmp_path / "data"), vocab_mode="hash")
    assert str(error.value) == f"{raw / 'day_5'}:3: expected 40 columns, found 39"
    bad = lines[23][:]
    columns = bad[6].split("\t")
    columns[4] = "4x"
    bad[6] = "\t".join(columns)
    (raw / "day_5").write_text("".join(lines[5]))
    (raw / "day_23").write_text("".join(bad))
    with pytest.raises(DataError) as error:
        prepare("criteo_1tb", str(raw), str(tmp_path / "data"), vocab_mode="hash")
    assert str(error.value) == f"{raw / 'day_23'}:7: column 5 (I4): '4x' is not an integer"
    feature_map = prepare("criteo_1tb", str(raw), str(tmp_path / "data"), vocab_mode="hash",
                          skip_bad_rows=True)
    assert feature_map["bad_rows"]["by_reason"] == {"non_integer": 1}
    # The halves are cut by physical line: the skipped line 7 was in the valid half.
    assert feature_map["splits"]["test"]["num_examples"] == 5
    assert feature_map["splits"]["valid"]["num_examples"] == 3


def test_eval_split_sizes_match_mlperf():
    assert criteo_1tb.eval_split_sizes(178_274_637) == (89_137_319, 89_137_318)
    halves = np.array_split(np.arange(11), 2)
    assert criteo_1tb.eval_split_sizes(11) == (len(halves[0]), len(halves[1]))


def test_count_lines_plain_gzip_and_no_final_newline(tmp_path):
    (tmp_path / "a").write_bytes(b"x\ny\nz")
    with gzip.open(tmp_path / "b.gz", "wb") as f:
        f.write(b"x\n" * 5)
    assert criteo_1tb.count_lines(str(tmp_path / "a"), block_bytes=2) == 3
    assert criteo_1tb.count_lines(str(tmp_path / "b.gz")) == 5


def test_cli_flags_and_one_line_errors(tmp_path):
    _days(tmp_path / "raw")
    out = tmp_path / "p1"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "mlctr.data.prepare", "--dataset=criteo_1tb",
             f"--raw={tmp_path / 'raw'}", *args], capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, timeout=120)

    result = cli(f"--out={out}", "--vocab_mode=hash", "--hash_buckets=300",
                 "--field_buckets=I1=8", "--max_rows=201", "--process_index=1",
                 "--process_count=2")
    assert result.returncode == 0, result.stderr
    with open(out / "feature_map.json") as f:
        feature_map = json.load(f)
    assert feature_map["split"]["train_days"] == list(range(1, 23, 2))
    assert [f["hash_buckets"] for f in feature_map["fields"][:2]] == [8, 200]
    os.remove(tmp_path / "raw" / "day_0")
    result = cli(f"--out={tmp_path / 'p0'}", "--vocab_mode=hash")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'raw' / 'day_0'}: missing day file")
