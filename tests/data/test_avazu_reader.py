"""The Avazu reader on the real rows in ../shared/data, against a plain-Python reference."""

import datetime

import numpy as np

from mlctr.data import avazu, parsing


def reference_rows(path):
    keys, labels = [], []
    with open(path, "rb") as f:
        assert f.readline().rstrip(b"\r\n") == avazu.HEADER
        for line in f:
            row = dict(zip(avazu.COLUMNS, line.rstrip(b"\r\n").split(b",")))
            labels.append(int(row["click"]))
            hour = row["hour"].decode()
            when = datetime.datetime.strptime("20" + hour, "%Y%m%d%H")
            weekday = int(when.strftime("%w"))
            values = [int(hour[6:])]
            for name in avazu.COLUMNS[3:]:
                value = row[name]
                values.append(int(value) if name in avazu.INT_COLUMNS
                              else parsing.string_key(value))
            values += [weekday, int(weekday in (0, 6))]
            keys.append(values)
    return np.array(keys, np.int64), np.array(labels, np.uint8)


def test_real_rows_match_reference(avazu_files):
    total = 0
    for path in avazu_files:
        chunks = parsing.RawFile(path, chunk_bytes=5000).chunks()
        parts = [avazu.parse_chunk(path, c) for c in chunks]
        assert all(p.first_error is None for p in parts)
        keys = np.concatenate([p.keys for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        expected_keys, expected_labels = reference_rows(path)
        np.testing.assert_array_equal(keys, expected_keys, err_msg=path)
        np.testing.assert_array_equal(labels, expected_labels, err_msg=path)
        assert parts[0].line_numbers[0] == 2  # line 1 is the header
        total += len(labels)
    assert total > 9_000


def test_hour_fields():
    hours = np.array([14102100, 14102523, 14102615, 16022923, 14093100, 14102124, 15022900])
    hour, weekday, weekend, ok = avazu.hour_fields(hours)
    assert ok.tolist() == [True, True, True, True, False, False, False]
    assert hour[:4].tolist() == [0, 23, 15, 23]
    # 2014-10-21 Tuesday, 10-25 Saturday, 10-26 Sunday, 2016-02-29 Monday.
    assert weekday[:4].tolist() == [2, 6, 0, 1]
    assert weekend[:4].tolist() == [0, 1, 1, 0]
