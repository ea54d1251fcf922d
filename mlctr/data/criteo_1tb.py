"""The Criteo 1TB click logs (`day_0` .. `day_23`) and the MLPerf DLRM split.

Criteo's Terabyte Click Logs are 24 day files, `day_0` .. `day_23` (plain or `.gz`),
4.37 billion rows in all, each line the 40 tab-separated columns of Kaggle Criteo
(`mlctr.data.criteo`): `label`, `I1`..`I13` integers (here some negative), `C1`..`C26`
hex strings, any of them possibly empty. The rows are parsed and bucketed as Criteo_x4
(a negative integer x <= 2 is its own bucket, as in BARS's `int(x)`).

The split is MLPerf DLRM's (the facebookresearch/dlrm reference, `data_utils.py`):
days 0-22 train; day 23 cut in two with `np.array_split(day_23_rows, 2)`, the first
ceil(n/2) lines the test set and the rest the validation set (89,137,319 and 89,137,318
rows of the real day 23).

Multi-host: with hashed vocabularies no process needs another's rows to give an id, so
each process prepares its own share of the train days (`train_days`: day d goes to
process d mod P, fixed by jax.process_index() / process_count()), plus all of day 23
(every process evaluates on the same rows; the reader gives each its slice).
"""

from __future__ import annotations

import gzip
import os
import zlib

from mlctr.data import criteo
from mlctr.data.errors import DataError

NAME = "criteo_1tb"
NUM_DAYS = 24
EVAL_DAY = NUM_DAYS - 1
TRAIN_DAYS = tuple(range(EVAL_DAY))
# The raw format is Kaggle Criteo's.
DELIMITER = criteo.DELIMITER
HEADER = None
COLUMNS = criteo.COLUMNS
FIELD_NAMES = criteo.FIELD_NAMES
FIELD_KINDS = criteo.FIELD_KINDS
MISSING_KEYS = criteo.MISSING_KEYS
MIN_COUNT = criteo.MIN_COUNT
columns = criteo.columns
parse_chunk = criteo.parse_chunk
# MLPerf DLRM (--max-ind-range=40000000) caps every table at 40M rows.
MLPERF_MAX_ROWS = 40_000_000


def day_file(raw_dir: str, day: int) -> str:
    """The file of one day: `day_<d>` or `day_<d>.gz` (DataError naming it when neither,
    and when both: which one holds the day is not ours to guess, and picking one
    silently dropped the other's rows)."""
    plain = os.path.join(str(raw_dir), f"day_{day}")
    found = [path for path in (plain, plain + ".gz") if os.path.isfile(path)]
    if len(found) == 2:
        raise DataError(plain, f"two files for day {day}: day_{day} and day_{day}.gz in "
                        f"{raw_dir}; keep one (e.g. remove day_{day} if it is the "
                        "decompressed copy of day_{day}.gz)".replace("{day}", str(day)),
                        reason="ambiguous_file")
    if found:
        return found[0]
    if not os.path.isdir(str(raw_dir)):
        raise DataError(str(raw_dir), "not a directory: --raw must be the directory holding "
                        f"day_0 .. day_{EVAL_DAY} (plain or .gz)", reason="missing_file")
    raise DataError(plain, f"missing day file (neither day_{day} nor day_{day}.gz in "
                    f"{raw_dir}); the Criteo 1TB dataset needs day_0 .. day_{EVAL_DAY}",
                    reason="missing_file")


def train_days(process_index: int = 0, process_count: int = 1) -> list[int]:
    """The train days process `process_index` of `process_count` reads: d mod P == index.

    Raises:
        ValueError: process_index outside [0, process_count), or more processes than
            train days (a process would have no rows).
    """
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    if process_count > len(TRAIN_DAYS):
        raise ValueError(f"process_count {process_count}: more processes than the "
                         f"{len(TRAIN_DAYS)} train days of Criteo 1TB")
    return [d for d in TRAIN_DAYS if d % process_count == process_index]


def source_files(raw_dir: str, process_index: int = 0, process_count: int = 1
                 ) -> list[tuple[int, str]]:
    """(day, path) of this process's train days, then day 23; every day file checked."""
    days = train_days(process_index, process_count)
    # All 24 are checked, so a missing day fails every process alike, before any work.
    paths = {d: day_file(raw_dir, d) for d in range(NUM_DAYS)}
    return [(d, paths[d]) for d in days + [EVAL_DAY]]


def count_lines(path: str, block_bytes: int = 16 << 20) -> int:
    """Lines of a plain or gzip file (a last line without a newline counts)."""
    opener = gzip.open if path.endswith(".gz") else open
    count, last = 0, b"\n"
    try:
        with opener(path, "rb") as f:
            while block := f.read(block_bytes):
                count += block.count(b"\n")
                last = block[-1:]
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"cannot read: {e}", reason="corrupt_gzip"
                        if path.endswith(".gz") else "unreadable") from None
    return count + (last != b"\n")


def eval_split_sizes(num_lines: int) -> tuple[int, int]:
    """(test, valid) lines of day 23: np.array_split halves, the larger one first."""
    test = -(-num_lines // 2)
    return test, num_lines - test
