"""The vectorised tokenizer: the fields of every line of a chunk in one numpy scan.

`split_lines` finds every delimiter and newline of a chunk at once. In the common case
(every line has the right column count, checked with a count and one gather) the
separators are the field ends and each field starts after the previous one, two flat
array operations; otherwise the lines with a wrong column count are set aside. The
result holds per-field byte offsets and lengths as field-major [columns, rows] views
of row-major arrays, so that the gathers at field starts read the chunk in order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mlctr.data.parsing.stream import RawChunk

# Zero bytes appended to every chunk so an 8-byte word can be read at any field start.
PAD = 16


@dataclasses.dataclass
class SplitLines:
    """The fields of the well-formed lines of one chunk.

    Attributes:
        buf: the chunk's bytes as uint8, plus zero padding.
        starts: int64 [C, n] byte offset in `buf` of each field (field-major: a
            transposed view of a row-major array).
        lengths: int64 [C, n] byte length of each field (without delimiter, CR, newline).
        line_numbers: int64 [n] 1-based file line number of each row.
        bad_line_numbers: int64 [k] lines whose column count is not C.
        bad_column_counts: int64 [k] their column counts (0 for an empty line).
        missing_final_newline: as in RawChunk.
        last_line: line number of the chunk's last line.
    """

    buf: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    line_numbers: np.ndarray
    bad_line_numbers: np.ndarray
    bad_column_counts: np.ndarray
    missing_final_newline: bool
    last_line: int

    def value(self, row: int, column: int) -> str:
        """The text of one field (for error messages)."""
        start = int(self.starts[column, row])
        raw = bytes(self.buf[start:start + int(self.lengths[column, row])])
        return raw.decode("utf-8", errors="replace")


def split_lines(chunk: RawChunk, delimiter: bytes, num_columns: int) -> SplitLines:
    """Finds the fields of every line of `chunk` in one vectorised pass.

    Args:
        chunk: whole lines, each ending in a newline.
        delimiter: the one-byte field separator (b"\\t" or b",").
        num_columns: the expected number of columns C.

    Returns:
        SplitLines; lines with a column count other than C are listed apart.
    """
    buf = np.frombuffer(chunk.data + bytes(PAD), dtype=np.uint8)
    text = buf[:len(chunk.data)]
    newline = text == 10
    is_separator = text == ord(delimiter)
    is_separator |= newline
    separators = np.flatnonzero(is_separator)
    num_lines = int(np.count_nonzero(newline))
    del newline, is_separator
    # The common case: C separators per line, the last of each group a newline. Then
    # the groups are the lines (there are as many newlines as groups), and the
    # separators reshaped are the field ends, line by line.
    if len(separators) == num_lines * num_columns and (
            num_lines == 0 or bool((text[separators[num_columns - 1::num_columns]] == 10).all())):
        line_numbers = chunk.first_line + np.arange(num_lines, dtype=np.int64)
        # Each field starts after the previous separator (line by line, field by field).
        starts = np.empty_like(separators)
        starts[:1] = 0
        np.add(separators[:-1], 1, out=starts[1:])
        ends = separators
        empty = np.zeros(0, np.int64)
        good_line_numbers, bad_line_numbers, bad_counts = line_numbers, empty, empty
    else:
        line_end_index = np.flatnonzero(text[separators] == 10)  # index into separators
        columns_per_line = np.diff(line_end_index, prepend=-1)
        line_numbers = chunk.first_line + np.arange(len(line_end_index), dtype=np.int64)
        good = columns_per_line == num_columns
        line_ends = separators[line_end_index]
        line_starts = np.empty_like(line_ends)
        line_starts[:1] = 0
        line_starts[1:] = line_ends[:-1] + 1
        bad_counts = columns_per_line[~good]
        line_lengths = line_ends - line_starts
        bad_counts = np.where(line_lengths[~good] == 0, 0, bad_counts)
        good_end_index = line_end_index[good]
        ends = separators[good_end_index[:, None] + np.arange(1 - num_columns, 1)[None, :]]
        starts = np.empty_like(ends)
        starts[:, 0] = line_starts[good]
        starts[:, 1:] = ends[:, :-1] + 1
        good_line_numbers, bad_line_numbers = line_numbers[good], line_numbers[~good]
        num_lines = len(line_end_index)
    # Row-major [n, C] underneath (so the gathers at field starts read the chunk in
    # order), field-major [C, n] views.
    starts = starts.reshape(-1, num_columns).T
    ends = ends.reshape(-1, num_columns).T
    if b"\r" in chunk.data:  # CRLF line ends: the CR is not part of the last field
        last = ends[-1]
        has_cr = (last > starts[-1]) & (buf[np.maximum(last - 1, 0)] == 13)
        ends[-1] -= has_cr
    ends -= starts  # the lengths, in place
    return SplitLines(buf=buf, starts=starts, lengths=ends,
                      line_numbers=good_line_numbers,
                      bad_line_numbers=bad_line_numbers,
                      bad_column_counts=bad_counts,
                      missing_final_newline=chunk.missing_final_newline,
                      last_line=chunk.first_line + num_lines - 1)
