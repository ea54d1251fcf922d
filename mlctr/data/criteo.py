"""Criteo Kaggle `train.txt`: raw format and BARS Criteo_x4 preprocessing.

Each line: 40 tab-separated columns, no header: `label` (0/1), `I1`..`I13` (integers,
possibly empty, I2 possibly negative), `C1`..`C26` (8 hex digit strings, possibly
empty). Kaggle's unlabeled `test.txt` has the same columns without `label`.

Preprocessing (BARS Criteo_x4 / FuxiCTR): a missing integer becomes 0, then every
integer x becomes the bucket `int(floor(ln(x)**2))` if x > 2 else `int(x)`, used as a
categorical value; a missing string is "" (key 0), which like rare values maps to the
field's OOV id. The 39 output fields are I1..I13, C1..C26.
"""

from __future__ import annotations

import numpy as np

from mlctr.data import parsing

NAME = "criteo"
DELIMITER = b"\t"
HEADER = None
INT_COLUMNS = [f"I{i}" for i in range(1, 14)]
STR_COLUMNS = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label"] + INT_COLUMNS + STR_COLUMNS
FIELD_NAMES = INT_COLUMNS + STR_COLUMNS
FIELD_KINDS = ["numeric"] * len(INT_COLUMNS) + ["categorical"] * len(STR_COLUMNS)
# Key meaning "missing" per field (always OOV): none for the integers (missing -> 0 ->
# bucket 0, a value like any other, as in BARS), the empty string for the strings.
MISSING_KEYS = [None] * len(INT_COLUMNS) + [0] * len(STR_COLUMNS)
MIN_COUNT = {"x4_001": 10, "x4_002": 2}


def bucketize(values: np.ndarray) -> np.ndarray:
    """BARS bucketing of Criteo integers: floor(ln(x)^2) if x > 2 else x (int64)."""
    values = np.asarray(values, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.floor(np.log(values.astype(np.float64)) ** 2)
    return np.where(values > 2, logs, values).astype(np.int64)


_BUCKET_TABLE = bucketize(np.arange(1 << 16))


def bucketize_fast(values: np.ndarray) -> np.ndarray:
    """`bucketize` by table lookup below 2^16 (most counts), computed for the rest."""
    buckets = _BUCKET_TABLE.take(values, mode="clip")
    outside = values.view(np.uint64) >= np.uint64(len(_BUCKET_TABLE))  # or negative
    if outside.any():
        where = np.nonzero(outside)
        buckets[where] = bucketize(values[where])
    return buckets


def columns(labeled: bool = True) -> list[str]:
    """Raw column names of a labeled (train.txt) or unlabeled (test.txt) file."""
    return COLUMNS if labeled else COLUMNS[1:]


def parse_chunk(path: str, chunk: parsing.RawChunk, *, labeled: bool = True
                ) -> parsing.ParsedChunk:
    """Parses whole Criteo lines into per-field keys (bucketised integers, string keys).

    Args:
        path: the raw file (for error messages).
        chunk: whole lines.
        labeled: whether the first column is the label.

    Returns:
        ParsedChunk with keys int64 [n, 39] in FIELD_NAMES order.
    """
    names = columns(labeled)
    lines = parsing.split_lines(chunk, DELIMITER, len(names))
    n = len(lines.line_numbers)
    problems = parsing.RowProblems.empty(n)
    first = 1 if labeled else 0
    buf, starts, lengths = lines.buf, lines.starts, lines.lengths
    if labeled:
        labels, ok = parsing.parse_labels(buf, starts[0], lengths[0])
        problems.flag(~ok, 0, "bad_label", lambda v: f"label {v!r} is not 0 or 1")
    else:
        labels = np.zeros(n, np.uint8)
    num_int = len(INT_COLUMNS)
    int_cols = slice(first, first + num_int)
    int_lengths = lengths[int_cols]
    values, ok = parsing.parse_ints(buf, starts[int_cols], int_lengths)
    missing = int_lengths == 0
    problems.flag_columns(~ok & ~missing, list(range(first, first + num_int)),
                          "non_integer", lambda v: f"{v!r} is not an integer")
    keys = np.empty((len(FIELD_NAMES), n), np.int64)
    # Missing integers parse as 0; the keys of rows with a problem are dropped.
    keys[:num_int] = bucketize_fast(values.T).T  # (values.T: row-major, contiguous)
    str_cols = slice(first + num_int, len(names))
    keys[num_int:] = parsing.string_keys(buf, starts[str_cols], lengths[str_cols])
    return parsing.assemble(path, lines, problems, keys, labels, names)
