"""Bad rows: which column of which row is wrong and why, counted and reported as one line.

A format's `parse_chunk` flags the problems of each well-formed row column by column
in a `RowProblems` (the first problem of a row wins); `assemble` then drops the bad
rows, whether their column count or a value was wrong, counts them by reason (what
`--skip_bad_rows` records) and keeps a `DataError` naming the file, line and column of
the chunk's first bad row.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

import numpy as np

from mlctr.data.errors import DataError
from mlctr.data.parsing.lines import SplitLines


@dataclasses.dataclass
class RowProblems:
    """The first problem (in column order) of each well-formed row of a chunk.

    Attributes:
        column: int32 [n]: column index of the first problem, -1 where the row is fine.
        reason: int32 [n]: index into `reasons` of that problem.
        reasons: reason names, e.g. "non_integer".
        details: for each reason, a function (value text) -> message.
    """

    column: np.ndarray
    reason: np.ndarray
    reasons: list = dataclasses.field(default_factory=list)
    details: list = dataclasses.field(default_factory=list)

    @classmethod
    def empty(cls, num_rows: int) -> "RowProblems":
        """No problems yet for `num_rows` rows."""
        return cls(np.full(num_rows, -1, np.int32), np.zeros(num_rows, np.int32))

    def flag(self, bad: np.ndarray, column: int, reason: str,
             detail: Callable[[str], str]) -> None:
        """Records `reason` at `column` for the rows in `bad` without an earlier problem.

        Columns must be flagged in increasing order.
        """
        rows = bad & (self.column < 0)
        if not rows.any():
            return
        if reason not in self.reasons:
            self.reasons.append(reason)
            self.details.append(detail)
        self.column[rows] = column
        self.reason[rows] = self.reasons.index(reason)

    def flag_columns(self, bad: np.ndarray, columns: list[int], reason: str,
                     detail: Callable[[str], str]) -> None:
        """`flag` for a [len(columns), n] mask, one column after the other."""
        if bad.any():
            for j, column in enumerate(columns):
                self.flag(bad[j], column, reason, detail)


@dataclasses.dataclass
class ParsedChunk:
    """Keys and labels of the good rows of one chunk, and what was wrong with the rest.

    Attributes:
        keys: int64 [n, F] per-field value keys of the good rows (a transposed view of a
            field-major array, so keys[:, f] is contiguous).
        labels: uint8 [n] (all zero for unlabeled files).
        line_numbers: int64 [n] file line numbers of the good rows.
        skipped: Counter of bad rows by reason.
        first_error: a DataError for the first bad row of the chunk, or None.
    """

    keys: np.ndarray
    labels: np.ndarray
    line_numbers: np.ndarray
    skipped: collections.Counter
    first_error: DataError | None


def assemble(path: str, lines: SplitLines, problems: RowProblems, keys: np.ndarray,
             labels: np.ndarray, column_names: list[str]) -> ParsedChunk:
    """Drops the bad rows of a chunk, counting them by reason and keeping the first error.

    Args:
        path: the raw file (for messages).
        lines: the chunk's split lines.
        problems: problems of the well-formed rows.
        keys: int64 [F, n] keys of the well-formed rows (field-major).
        labels: uint8 [n] labels of the well-formed rows.
        column_names: names of the raw columns (for messages).

    Returns:
        ParsedChunk of the good rows.
    """
    skipped: collections.Counter = collections.Counter()
    errors: list[DataError] = []
    num_columns = len(column_names)
    if len(lines.bad_line_numbers):
        truncated_line = lines.last_line if lines.missing_final_newline else -1
        for i, (line, count) in enumerate(zip(lines.bad_line_numbers, lines.bad_column_counts)):
            if line == truncated_line:
                reason = "truncated_last_line"
                detail = (f"truncated last line: no newline at the end of the file and "
                          f"{count} of {num_columns} columns")
            elif count == 0:
                reason = "wrong_column_count"
                detail = f"empty line (expected {num_columns} columns)"
            else:
                reason = "wrong_column_count"
                detail = f"expected {num_columns} columns, found {count}"
            skipped[reason] += 1
            if i == 0:
                errors.append(DataError(path, detail, line=int(line), reason=reason))
    bad_rows = problems.column >= 0
    if bad_rows.any():
        rows = np.flatnonzero(bad_rows)
        for r, name in enumerate(problems.reasons):
            skipped[name] += int(np.count_nonzero(problems.reason[rows] == r))
        row = int(rows[0])
        column = int(problems.column[row])
        reason = problems.reasons[problems.reason[row]]
        detail = problems.details[problems.reason[row]](lines.value(row, column))
        errors.append(DataError(path, detail, line=int(lines.line_numbers[row]),
                                column=column + 1, column_name=column_names[column],
                                reason=reason))
        keep = ~bad_rows
        keys, labels = keys[:, keep], labels[keep]
        line_numbers = lines.line_numbers[keep]
    else:
        line_numbers = lines.line_numbers
    first_error = min(errors, key=lambda e: e.line) if errors else None
    return ParsedChunk(keys.T, labels, line_numbers, skipped, first_error)
