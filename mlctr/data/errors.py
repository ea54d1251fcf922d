"""The exception types the data pipeline raises for bad input and bad datasets.

Every problem with a user's raw file (missing, empty, malformed row, corrupt gzip) is a
`DataError` whose message names the file, the 1-based line number and the column; every
problem with a prepared dataset directory (where `prepare` writes it, or what
`PreparedDataset` finds when it opens it) is a `DatasetError` naming the file and, where
it is about one, the field. Both are one line, so a CLI can print them and exit non-zero
without a traceback; catching `DataError` catches both.
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


class DatasetError(DataError):
    """A prepared dataset directory that cannot be used as it is.

    Raised when a dataset is opened and its files disagree with feature_map.json (or
    with its checksums), and when `prepare` cannot write one (output exists, is not
    writable, the disk is full).

    Attributes:
        path: the file (or directory) at fault.
        field: the feature field concerned, e.g. "C3" (None when not about one field).
        reason: a short machine-readable reason, e.g. "id_out_of_range".
        detail: the human-readable problem, without the location prefix.
    """

    def __init__(self, path: str, detail: str, *, field: str | None = None,
                 reason: str = "bad_dataset"):
        super().__init__(path, f"field {field}: {detail}" if field else detail,
                         column_name=field, reason=reason)
        self.field = field
        self.detail = detail
