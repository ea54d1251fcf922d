"""HashedStream: batches straight from raw files, the ids of a hash-mode prepare."""

import numpy as np
import pytest

from mlctr.data import DataError, encode_raw
from mlctr.data.hashed_stream import HashedStream
from mlctr.data.prepare import prepare


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory, synthetic_criteo):
    """The 3000-row synthetic file cut into three raw files of 1000 rows."""
    directory = tmp_path_factory.mktemp("stream")
    with open(synthetic_criteo, "rb") as f:
        lines = f.readlines()
    paths = []
    for i in range(3):
        path = directory / f"day_{i}"
        path.write_bytes(b"".join(lines[i * 1000:(i + 1) * 1000]))
        paths.append(str(path))
    return paths


def test_stream_ids_are_the_hash_mode_prepare_ids(raw_files, tmp_path):
    options = dict(hash_buckets=5000, field_buckets="I3=32", max_rows=4001)
    stream = HashedStream("criteo", raw_files, chunk_bytes=20_000, **options)
    batches = list(stream.batches(256))
    assert len(batches) == 3000 // 256 == stream.num_batches(256)
    ids = np.concatenate([b["ids"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    expected_ids, expected_labels = [], []
    for i, path in enumerate(raw_files):
        out = str(tmp_path / f"p{i}")
        feature_map = prepare("criteo", path, out, vocab_mode="hash", **options)
        assert feature_map["fields"] == stream.fields
        assert feature_map["vocab_size"] == stream.vocab_size
        file_ids, file_labels = encode_raw(out, path)
        expected_ids.append(file_ids)
        expected_labels.append(file_labels)
    n = len(ids)
    np.testing.assert_array_equal(ids, np.concatenate(expected_ids)[:n])
    np.testing.assert_array_equal(labels, np.concatenate(expected_labels)[:n])
    assert batches[0]["ids"].dtype == np.int32 and batches[0]["label"].dtype == np.float32


def test_processes_read_their_own_files(raw_files):
    stream = HashedStream("criteo", raw_files, hash_buckets=100)
    assert stream.process_files(0, 2) == [raw_files[0], raw_files[2]]
    assert stream.process_files(1, 2) == [raw_files[1]]
    first = list(stream.batches(200, process_index=0, process_count=2))
    second = list(stream.batches(200, process_index=1, process_count=2))
    assert [len(first), len(second)] == [20, 10]
    assert stream.num_batches(200, process_index=1, process_count=2) == 10
    alone = HashedStream("criteo", [raw_files[1]], hash_buckets=100)
    np.testing.assert_array_equal(np.concatenate([b["ids"] for b in second]),
                                  np.concatenate([b["ids"] for b in alone.batches(100)]))
    with pytest.raises(ValueError, match="more processes than the 3 files"):
        stream.process_files(0, 4)
    with pytest.raises(ValueError, match="multiple of process_count"):
        next(stream.batches(201, process_count=2))


def test_bad_rows_raise_or_are_counted(tmp_path, raw_files):
    with open(raw_files[0], "rb") as f:
        lines = f.readlines()
    lines[4] = lines[4].replace(b"\t", b"", 1)  # 39 columns
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"bad.txt:5: expected 40 columns, found 39"):
        list(HashedStream("criteo", [str(bad)], hash_buckets=10).batches(100))
    stream = HashedStream("criteo", [str(bad)], hash_buckets=10, skip_bad_rows=True)
    assert sum(len(b["label"]) for b in stream.batches(1)) == 999
    assert stream.skipped == {"wrong_column_count": 1}
    with pytest.raises(DataError, match="nowhere.txt: no such file"):
        HashedStream("criteo", [str(tmp_path / "nowhere.txt")])
