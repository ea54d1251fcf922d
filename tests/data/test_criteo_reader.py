"""The Criteo reader on the real rows in ../shared/data, against a plain-Python reference."""

import gzip

import numpy as np

from mlctr.data import criteo, parsing


def parse_file(path, chunk_bytes=1 << 16):
    parts = [criteo.parse_chunk(path, chunk) for chunk in
             parsing.RawFile(path, chunk_bytes=chunk_bytes).chunks()]
    for part in parts:
        assert part.first_error is None, part.first_error
    return (np.concatenate([p.keys for p in parts]), np.concatenate([p.labels for p in parts]),
            np.concatenate([p.line_numbers for p in parts]))


def test_real_rows_match_reference(criteo_files, criteo_reference):
    total = 0
    for path in criteo_files:
        keys, labels, line_numbers = parse_file(path)
        expected_keys, expected_labels = criteo_reference(path)
        np.testing.assert_array_equal(keys, expected_keys, err_msg=path)
        np.testing.assert_array_equal(labels, expected_labels, err_msg=path)
        assert line_numbers.tolist() == list(range(1, len(labels) + 1))
        total += len(labels)
    assert total > 10_000


def test_gzip_and_chunk_size_do_not_change_rows(criteo_files, tmp_path):
    path = max(criteo_files, key=lambda p: len(open(p, "rb").read()))
    compressed = tmp_path / "train.txt.gz"
    compressed.write_bytes(gzip.compress(open(path, "rb").read()))
    keys, labels, _ = parse_file(path, chunk_bytes=1 << 20)
    for other, chunk_bytes in ((str(compressed), 1 << 20), (path, 777)):
        other_keys, other_labels, _ = parse_file(other, chunk_bytes)
        np.testing.assert_array_equal(other_keys, keys)
        np.testing.assert_array_equal(other_labels, labels)


def test_bucketize_matches_bars():
    values = np.array([-3, -1, 0, 1, 2, 3, 10, 100, 12345678])
    expected = [int(np.floor(np.log(v) ** 2)) if v > 2 else int(v) for v in values]
    assert criteo.bucketize(values).tolist() == expected
