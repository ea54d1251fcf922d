"""Tests of the vectorised parsing primitives (mlctr.data.parsing)."""

import gzip

import numpy as np
import pytest

from mlctr.data import parsing
from mlctr.data.errors import DataError


def _fields(text: bytes, delimiter=b"\t", num_columns=3):
    chunk = parsing.RawChunk(text, 1, text.count(b"\n"), False)
    return parsing.split_lines(chunk, delimiter, num_columns)


def test_parse_ints_matches_python():
    values = ["0", "7", "-1", "-12", "12345678", "123456789", "9999999999999999", "-9999999",
              "00042", "", "-", "1a", " 1", "1.0", "+5", "12345678901234567", "--1", "1-"]
    lines = _fields(("\t".join(values) + "\n").encode(), num_columns=len(values))
    parsed, ok = parsing.parse_ints(lines.buf, lines.starts, lines.lengths)
    for i, text in enumerate(values):
        try:
            expected = int(text) if text.lstrip("-").isdigit() and len(text.lstrip("-")) <= 16 \
                and text.count("-") <= 1 and not text.endswith("-") else None
        except ValueError:
            expected = None
        assert bool(ok[i, 0]) == (expected is not None), text
        if expected is not None:
            assert parsed[i, 0] == expected, text


def test_string_keys_exact_and_distinct():
    values = ["", "a", "68fd1e64", "68fd1e65", "abcdefgh1", "abcdefgh2", "é", "0"]
    lines = _fields(("\t".join(values) + "\n").encode(), num_columns=len(values))
    keys = parsing.string_keys(lines.buf, lines.starts, lines.lengths)[:, 0]
    assert len(set(keys.tolist())) == len(values)
    assert keys[0] == 0
    for value, key in zip(values, keys):
        assert key == parsing.string_key(value)
        if len(value.encode()) <= 8 and value.isascii():
            assert key >= 0 and parsing.decode_string_key(key) == value
        else:
            assert key < 0  # hashed


def test_split_lines_columns_crlf_and_bad_counts():
    text = b"1\t2\t3\r\n\n4\t5\n6\t\t\n"
    lines = _fields(text)
    assert lines.line_numbers.tolist() == [1, 4]
    assert lines.bad_line_numbers.tolist() == [2, 3]
    assert lines.bad_column_counts.tolist() == [0, 2]
    assert lines.value(0, 2) == "3"  # CR stripped
    assert [lines.value(1, c) for c in range(3)] == ["6", "", ""]


@pytest.mark.parametrize("compress", [False, True])
def test_raw_file_chunks_lines_and_checksum(tmp_path, compress):
    rows = b"".join(b"%d\tx\n" % i for i in range(1000)) + b"last\tline"
    path = tmp_path / ("f.gz" if compress else "f.txt")
    path.write_bytes(gzip.compress(rows) if compress else rows)
    raw = parsing.RawFile(str(path), chunk_bytes=100)
    chunks = list(raw.chunks())
    assert b"".join(c.data for c in chunks) == rows + b"\n"
    expected_first_lines = np.cumsum([1] + [c.num_lines for c in chunks[:-1]])
    assert [c.first_line for c in chunks] == expected_first_lines.tolist()
    assert chunks[-1].missing_final_newline and not chunks[0].missing_final_newline
    import hashlib
    assert raw.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert raw.is_gzip == compress


def test_corrupt_gzip_names_file_and_line(tmp_path):
    data = gzip.compress(b"".join(b"%d\tx\n" % i for i in range(20000)))
    path = tmp_path / "bad.gz"
    path.write_bytes(data[:len(data) // 2])  # truncated stream
    with pytest.raises(DataError) as error:
        list(parsing.RawFile(str(path), chunk_bytes=1 << 12).chunks())
    assert error.value.reason == "corrupt_gzip"
    assert str(path) in str(error.value) and ":" in str(error.value)


def _python_int(text: bytes):
    """The integer parse_ints accepts: optional '-', 1 to 16 ASCII digits; else None."""
    digits = text[1:] if text.startswith(b"-") and len(text) > 1 else text
    if 1 <= len(digits) <= 16 and all(48 <= b <= 57 for b in digits):
        return -int(digits) if digits is not text else int(digits)
    return None


@pytest.mark.parametrize("delimiter", [b"\t", b","])
def test_random_lines_match_python(delimiter):
    # Random fields (digits, signs, letters, non-ASCII and control bytes, up to 20
    # bytes), some lines with a wrong column count or CRLF: split, ints and string keys
    # against plain Python, on the row-major views split_lines returns.
    rng = np.random.default_rng(3)
    alphabet = list(b"0123456789" * 6 + b"--abcf+ .x") + [0xC3, 0xA9, 0x80, 0xFF, 0xFA, 0x2F,
                                                          0x3A, 13]
    num_columns = 5
    for _ in range(20):
        rows, lines = [], []
        for _ in range(int(rng.integers(1, 80))):
            count = num_columns if rng.random() < 0.9 else int(rng.integers(1, 8))
            fields = [bytes(rng.choice(alphabet, int(rng.choice([0, 1, 2, 3, 5, 8, 9, 16, 17, 20])))
                            .astype(np.uint8).tolist()).replace(delimiter, b"").rstrip(b"\r")
                      for _ in range(count)]
            lines.append(delimiter.join(fields) + (b"\r\n" if rng.random() < 0.1 else b"\n"))
            if count == num_columns:
                rows.append((len(lines), fields))
        lines = _fields(b"".join(lines), delimiter, num_columns)
        assert lines.line_numbers.tolist() == [number for number, _ in rows]
        values, ok = parsing.parse_ints(lines.buf, lines.starts, lines.lengths)
        keys = parsing.string_keys(lines.buf, lines.starts, lines.lengths)
        for r, (_, fields) in enumerate(rows):
            for c, field in enumerate(fields):
                start, length = lines.starts[c, r], lines.lengths[c, r]
                assert bytes(lines.buf[start:start + length]) == field
                expected = _python_int(field)
                assert bool(ok[c, r]) == (expected is not None), field
                if expected is not None:
                    assert values[c, r] == expected, field
                assert keys[c, r] == parsing.string_key(field), field


def test_ordered_map_keeps_order_and_raises_in_order():
    import threading
    import time

    def slow_square(x):
        time.sleep(0.001 * (x % 3))
        if x == 7:
            raise ValueError("seven")
        return x * x, threading.get_ident()

    results = list(parsing.ordered_map(slow_square, iter(range(7)), 2))
    assert [r for r, _ in results] == [x * x for x in range(7)]
    assert len({t for _, t in results}) <= 2
    with pytest.raises(ValueError, match="seven"):
        list(parsing.ordered_map(slow_square, iter(range(20)), 2))
    assert [r for r, _ in parsing.ordered_map(slow_square, iter(range(5)), 1)] == [0, 1, 4, 9, 16]
