"""The one exception type the data pipeline raises for bad input.

Every problem with a user's raw file (missing, empty, malformed row, corrupt gzip) is a
`DataError` whose message names the file, the 1-based line number and the column, so the
CLI can print it as one line and exit non-zero without a traceback.
"""

from __future__ import annotations


class DataError(Exception):
    """Bad input data: the message names the file, line and column.

    Attributes:
        path: the file at fault.
        line: 1-based physical line number in that file (None when not about one line).
        column: 1-based column number (None when not about one column).
        column_name: the column's name, e.g. "I5" or "hour" (None when unknown).
        reason: a short machine-readable reason, e.g. "wrong_column_count"; the keys under
            which `--skip_bad_rows` counts skipped rows.
        detail: the human-readable problem, without the location prefix.
    """

    def __init__(self, path: str, detail: str, *, line: int | None = None,
                 column: int | None = None, column_name: str | None = None,
                 reason: str = "bad_input"):
        self.path = path
        self.line = line
        self.column = column
        self.column_name = column_name
        self.reason = reason
        self.detail = detail
        where = str(path)
        if line is not None:
            where += f":{line}"
        if column is not None:
            where += f": column {column}" + (f" ({column_name})" if column_name else "")
        super().__init__(f"{where}: {detail}")
