"""criteo_1tb: day files, the MLPerf split, per-process train days and training, bad input."""

import gzip
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from mlctr import predict
from mlctr.run import errors, inputs, train
from mlctr.configs import tiny
from mlctr.data import DataError, criteo_1tb, encode_raw
from mlctr.data.prepare import prepare
from mlctr.data.reader import PreparedDataset, ProcessShard, process_seed

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


# Per-process training (mlctr.run.inputs): day d is process d mod P's, so with rows_per_day
# alternating (21, 30) process 0 of 2 holds 12 x 21 = 252 train rows and process 1
# 11 x 30 = 330.
ROWS_PER_DAY = (21, 30)
EVAL_ROWS = 50


def _process_rows(process_index: int, process_count: int) -> int:
    """The reference: train rows of a process, from the day files written by `_days`."""
    return sum(ROWS_PER_DAY[d % 2] for d in criteo_1tb.train_days(process_index, process_count))


def _run_config(tmp_path, **train_overrides):
    """The tiny config on hash-mode criteo_1tb day files under tmp_path/raw, locked."""
    config = tiny.get_config()
    with config.unlocked():
        config.mode = "train"
        config.peers = "deepfm,dcn"
        config.data.dataset = "criteo_1tb"
        config.data.raw = str(tmp_path / "raw")
        config.data.data_dir = str(tmp_path / "data")
        config.vocab.mode = "hash"
        config.vocab.hash_buckets = 64
        config.train.batch_size = 32
        config.train.update(train_overrides)
    config.lock()
    return config


def test_process_shard_batches_agree_and_resume(tmp_path):
    _days(tmp_path / "raw", rows_per_day=ROWS_PER_DAY, gz_days=(), eval_rows=EVAL_ROWS)
    shards = []
    for p in range(2):
        prepare("criteo_1tb", str(tmp_path / "raw"), str(tmp_path / f"p{p}"),
                vocab_mode="hash", hash_buckets=64, process_index=p, process_count=2)
        rows = [_process_rows(q, 2) for q in range(2)]
        shards.append(ProcessShard(PreparedDataset(str(tmp_path / f"p{p}")), p, rows,
                                   ["a", "b"]))
    # Steps per epoch: the smallest shard's, 252 // 16 = 15; 12 and 90 rows left out.
    assert [s.num_train_batches(32) for s in shards] == [15, 15]
    assert shards[1].rows_left_out(32) == [252 - 15 * 16, 330 - 15 * 16]
    assert shards[0].vocab_size == PreparedDataset(str(tmp_path / "p0")).vocab_size
    epoch = list(shards[1].train_batches(32, seed=3, epoch=1, process_index=1, process_count=2))
    assert len(epoch) == 15 and all(b["ids"].shape == (16, 39) for b in epoch)
    # Each process's own rows, in its own seeded order: the reader's, at B / P rows.
    own = list(shards[1].dataset.train_batches(16, seed=process_seed(3, 1), epoch=1))[:15]
    for got, want in zip(epoch, own):
        np.testing.assert_array_equal(got["ids"], want["ids"])
    # Resuming at a batch yields exactly the rest of the epoch.
    rest = list(shards[1].train_batches(32, seed=3, epoch=1, process_index=1,
                                        process_count=2, start_batch=9))
    for got, want in zip(rest, epoch[9:], strict=True):
        np.testing.assert_array_equal(got["ids"], want["ids"])
    assert process_seed(3, 0) != process_seed(3, 1)
    with pytest.raises(ValueError, match="each needs its own slice"):
        shards[0].train_batches(32, seed=3, epoch=0, process_count=1)


def test_shard_summaries_agree_only_on_the_same_eval_rows_and_options(tmp_path):
    lines = _days(tmp_path / "raw", rows_per_day=ROWS_PER_DAY, gz_days=(), eval_rows=EVAL_ROWS)
    summaries = {}
    for name, p, buckets in (("p0", 0, 64), ("p1", 1, 64), ("p1_128", 1, 128)):
        prepare("criteo_1tb", str(tmp_path / "raw"), str(tmp_path / name), vocab_mode="hash",
                hash_buckets=buckets, process_index=p, process_count=2)
        summaries[name] = inputs._shard_summary(PreparedDataset(str(tmp_path / name)))
    (tmp_path / "raw" / "day_23").write_text("".join(lines[23][1:] + lines[23][:1]))
    prepare("criteo_1tb", str(tmp_path / "raw"), str(tmp_path / "p1_moved"),
            vocab_mode="hash", hash_buckets=64, process_index=1, process_count=2)
    summaries["p1_moved"] = inputs._shard_summary(PreparedDataset(str(tmp_path / "p1_moved")))
    # Bytes 0-8: train rows; 8-40: the source digest; 40-72: what all processes share.
    assert int.from_bytes(summaries["p1"][:8].tobytes(), "little") == _process_rows(1, 2)
    assert summaries["p0"][8:40].tobytes() != summaries["p1"][8:40].tobytes()
    assert summaries["p0"][40:].tobytes() == summaries["p1"][40:].tobytes()
    for other in ("p1_128", "p1_moved"):  # other buckets; day 23's rows in another order
        assert summaries[other][40:].tobytes() != summaries["p1"][40:].tobytes()


def test_one_process_prepares_its_own_dir_and_trains(tmp_path):
    _days(tmp_path / "raw", rows_per_day=ROWS_PER_DAY, gz_days=(), eval_rows=EVAL_ROWS)
    config = _run_config(tmp_path, num_epochs=1)
    own = inputs.ensure_prepared(config, str(tmp_path / "run"))
    assert own == str(tmp_path / "data" / "process_0_of_1")
    with open(os.path.join(own, "feature_map.json")) as f:
        assert json.load(f)["split"]["train_days"] == list(range(23))
    shard = inputs.open_run_dataset(config, str(tmp_path / "run"))
    assert isinstance(shard, ProcessShard) and shard.process_train_rows == [_process_rows(0, 1)]
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["steps"] == _process_rows(0, 1) // 32
    assert {"deepfm", "dcn", "ensemble"} <= set(results["test"])
    # predict scores the run's rows from process 0's copy of the hashed dataset.
    *_, scoring_dir = predict.load_run(str(tmp_path / "run"))
    assert scoring_dir == own

    # Shards of another process count are refused, in one line, never mixed in.
    os.makedirs(tmp_path / "data" / "process_1_of_2")
    for call in (inputs.ensure_prepared, inputs.open_run_dataset):
        with pytest.raises(errors.RunError) as error:
            call(config, str(tmp_path / "run"))
        assert "\n" not in str(error.value)
        assert "prepared for 2 processes (process_*_of_2/), but this run has 1" in str(error.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch_two(tmp_path) -> subprocess.CompletedProcess:
    """`bash launch.sh multiprocess 2`: the tiny config on the day files in tmp_path/raw."""
    flags = ["--config=mlctr/configs/tiny.py", "--config.mode=train",
             "--config.peers=deepfm,dcn", "--config.data.dataset=criteo_1tb",
             f"--config.data.raw={tmp_path / 'raw'}", f"--config.data.data_dir={tmp_path / 'data'}",
             "--config.vocab.mode=hash", "--config.vocab.hash_buckets=64",
             "--config.train.batch_size=32", "--config.train.num_epochs=2",
             f"--workdir={tmp_path / 'run'}"]
    env = {**os.environ, "MLCTR_NO_VENV": "1", "PYTHON": sys.executable,
           "MLCTR_PORT": str(_free_port())}
    return subprocess.run(["bash", "launch.sh", "multiprocess", "2", *flags], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_train_from_their_own_days(tmp_path):
    _days(tmp_path / "raw", rows_per_day=ROWS_PER_DAY, gz_days=(), eval_rows=EVAL_ROWS)
    workdir = str(tmp_path / "run")

    def launch():
        proc = _launch_two(tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        with open(os.path.join(workdir, "results.json")) as f:
            return json.load(f), proc.stderr

    results, log = launch()
    rows = [_process_rows(p, 2) for p in range(2)]
    for p in range(2):  # each process prepared exactly its own days, and all of day 23
        with open(tmp_path / "data" / f"process_{p}_of_2" / "feature_map.json") as f:
            feature_map = json.load(f)
        assert feature_map["split"]["train_days"] == criteo_1tb.train_days(p, 2)
        assert feature_map["splits"]["train"]["num_examples"] == rows[p]
        assert feature_map["splits"]["valid"]["num_examples"] == EVAL_ROWS // 2
    steps_per_epoch = min(rows) // 16  # 15: each process reads 16 rows of every batch
    left_out = [n - steps_per_epoch * 16 for n in rows]
    assert (f"criteo_1tb: train rows by process {rows}; 16 rows of every batch each, "
            f"{steps_per_epoch} steps per epoch (the smallest process's); rows left out per "
            f"epoch by process {left_out}") in log, log[-3000:]
    # Every step is one collective of both processes, and so is the final checkpoint: the
    # checkpoint at the end step says both ran exactly that many.
    assert results["steps"] == 2 * steps_per_epoch
    assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(2 * steps_per_epoch)]
    # The same command resumes: both processes agree with the checkpoint's dataset.
    again, _ = launch()
    assert again["resumed_from"] == 2 * steps_per_epoch
    assert again["test"] == results["test"]


def test_two_processes_one_bad_day_stops_both_in_one_line(tmp_path):
    lines = _days(tmp_path / "raw", rows_per_day=ROWS_PER_DAY, gz_days=(), eval_rows=EVAL_ROWS)
    bad = lines[5][:]  # day 5 is process 1's alone
    bad[2] = bad[2].rsplit("\t", 1)[0] + "\n"
    (tmp_path / "raw" / "day_5").write_text("".join(bad))
    proc = _launch_two(tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-6000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlctr: error:")]
    assert f"mlctr: error: {tmp_path / 'raw' / 'day_5'}:3: expected 40 columns, found 39" in errors
    # Process 0 prepared its days, learnt that process 1 could not, and stopped too
    # (jax.distributed owns SIGTERM, so the launcher's stop does not cut it short).
    assert ("mlctr: error: process(es) [1] could not prepare their datasets (each says why "
            "in its own log); process 0 stops with them") in errors, errors
    assert os.path.exists(tmp_path / "data" / "process_0_of_2" / "feature_map.json")
    assert not os.path.exists(tmp_path / "data" / "process_1_of_2" / "feature_map.json")
