"""Avazu Kaggle `train.csv`: raw format and BARS Avazu_x4 preprocessing.

Comma-separated with a header line `id,click,hour,C1,banner_pos,...,C21` (24 columns);
`hour` is YYMMDDHH. Kaggle's unlabeled `test.csv` has the same columns without `click`.

Preprocessing (BARS Avazu_x4 / FuxiCTR): `id` is dropped; `hour` becomes the hour of
day (field `hour`), plus `weekday` (0 = Sunday, as strftime %w) and `weekend` (1 on
Saturday and Sunday); every other column is a categorical value. The integer columns
(C1, banner_pos, device_type, device_conn_type, C14..C21) must hold integers; an empty
value there, like an empty string elsewhere, is missing and maps to the OOV id.
The 24 output fields are FIELD_NAMES.
"""

from __future__ import annotations

import numpy as np

from mlctr.data import parsing
from mlctr.data.errors import DataError

NAME = "avazu"
DELIMITER = b","
COLUMNS = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain",
           "site_category", "app_id", "app_domain", "app_category", "device_id",
           "device_ip", "device_model", "device_type", "device_conn_type",
           "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
HEADER = ",".join(COLUMNS).encode()
INT_COLUMNS = ["C1", "banner_pos", "device_type", "device_conn_type",
               "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
FIELD_NAMES = ["hour"] + COLUMNS[3:] + ["weekday", "weekend"]
FIELD_KINDS = ["categorical"] * len(FIELD_NAMES)
# Key of a missing value: "" for string columns, this sentinel for integer columns.
MISSING_INT = int(np.iinfo(np.int64).min)
MISSING_KEYS = [None] + [MISSING_INT if c in INT_COLUMNS else 0 for c in COLUMNS[3:]] + [None, None]
MIN_COUNT = {"x4_001": 2, "x4_002": 1}


def columns(labeled: bool = True) -> list[str]:
    """Raw column names of a labeled (train.csv) or unlabeled (test.csv) file."""
    return COLUMNS if labeled else [c for c in COLUMNS if c != "click"]


def header(labeled: bool = True) -> bytes:
    """The header line (without newline) of a labeled or unlabeled file."""
    return ",".join(columns(labeled)).encode()


def _strip_header(path: str, chunk: parsing.RawChunk, labeled: bool) -> parsing.RawChunk:
    if chunk.first_line != 1:
        return chunk
    end = chunk.data.index(b"\n")
    found = chunk.data[:end].rstrip(b"\r")
    if found != header(labeled):
        if found == header(not labeled):
            detail = ("header has no 'click' column (an unlabeled test file?)" if labeled
                      else "header has a 'click' column; expected an unlabeled file")
        else:
            shown = found[:120].decode("utf-8", errors="replace")
            detail = f"expected the Avazu header {header(labeled).decode()!r}, found {shown!r}"
        raise DataError(path, detail, line=1, reason="bad_header")
    return parsing.RawChunk(chunk.data[end + 1:], 2, chunk.num_lines - 1,
                            chunk.missing_final_newline)


def is_labeled(first_line: bytes) -> bool:
    """Whether a header line is that of a labeled file."""
    return first_line.rstrip(b"\r\n") == header(True)


def hour_fields(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hour of day, weekday (0 = Sunday), weekend flag and validity of YYMMDDHH ints."""
    year, rest = np.divmod(values, 10**6)
    month, rest = np.divmod(rest, 10**4)
    day, hour = np.divmod(rest, 100)
    ok = (values >= 0) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (hour <= 23)
    months = ((2000 + year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    dates = months.astype("datetime64[D]") + (np.clip(day, 1, 31) - 1)
    ok &= dates.astype("datetime64[M]") == months  # e.g. no 31 September
    weekday = (dates.astype(np.int64) + 4) % 7  # 1970-01-01 was a Thursday (%w = 4)
    weekend = ((weekday == 0) | (weekday == 6)).astype(np.int64)
    return hour, weekday, weekend, ok


def parse_chunk(path: str, chunk: parsing.RawChunk, *, labeled: bool = True
                ) -> parsing.ParsedChunk:
    """Parses whole Avazu lines into per-field keys.

    Args:
        path: the raw file (for error messages).
        chunk: whole lines; the file's header when chunk.first_line == 1.
        labeled: whether the file has the `click` column.

    Returns:
        ParsedChunk with keys int64 [n, 24] in FIELD_NAMES order.
    """
    names = columns(labeled)
    chunk = _strip_header(path, chunk, labeled)
    lines = parsing.split_lines(chunk, DELIMITER, len(names))
    n = len(lines.line_numbers)
    index = {name: i for i, name in enumerate(names)}
    problems = parsing.RowProblems.empty(n)
    buf, starts, lengths = lines.buf, lines.starts, lines.lengths
    keys = np.empty((len(FIELD_NAMES), n), np.int64)
    if labeled:
        c = index["click"]
        labels, ok = parsing.parse_labels(buf, starts[c], lengths[c])
        problems.flag(~ok, c, "bad_label", lambda v: f"label {v!r} is not 0 or 1")
    else:
        labels = np.zeros(n, np.uint8)
    c = index["hour"]
    values, ok = parsing.parse_ints(buf, starts[c], lengths[c])
    hour, weekday, weekend, hour_ok = hour_fields(np.where(ok, values, 0))
    problems.flag(~(ok & hour_ok & (lengths[c] == 8)), c, "bad_hour",
                  lambda v: f"{v!r} is not a valid hour (YYMMDDHH)")
    keys[0], keys[-2], keys[-1] = hour, weekday, weekend
    for f, name in enumerate(FIELD_NAMES[1:-2], start=1):
        c = index[name]
        if name in INT_COLUMNS:
            values, ok = parsing.parse_ints(buf, starts[c], lengths[c])
            missing = lengths[c] == 0
            problems.flag(~ok & ~missing, c, "non_integer", lambda v: f"{v!r} is not an integer")
            keys[f] = np.where(missing, MISSING_INT, values)
        else:
            keys[f] = parsing.string_keys(buf, starts[c], lengths[c])
    return parsing.assemble(path, lines, problems, keys, labels, names)
