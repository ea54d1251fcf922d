"""Streaming, vectorised parsing of delimited raw CTR files (plain or gzip).

The raw Criteo and Avazu files are tens of GB of short text lines, so nothing here
loops over rows in Python:

* `RawFile` streams a file in chunks of whole lines (4 MiB by default: the per-chunk
  arrays then stay in the CPU caches, twice as fast as 16 MiB here), from a
  background thread so that reading, gunzipping and hashing overlap the parsing; it
  counts line numbers for error messages and computes the SHA-256 of the bytes on disk.
* `split_lines` finds every delimiter and newline of a chunk with one numpy scan; in
  the common case (every line has the right column count, checked with a count and
  one gather) the separators are the field ends and each field starts after the
  previous one, two flat array operations. It returns per-field byte offsets and
  lengths as field-major [columns, rows] views of row-major arrays (so that the
  gathers at field starts read the chunk in order), setting aside the rows whose
  column count is wrong.
* `string_keys` turns each field's bytes into an exact int64 key by reading the 8 bytes
  at the field start as one little-endian word (an unaligned strided view of the
  chunk) and shifting out the bytes past its length. Strings of up to 8 ASCII bytes
  (all Criteo and Avazu values) map to distinct non-negative keys, the empty string
  to 0; longer or non-ASCII strings fall back to a 63-bit BLAKE2b hash with the top
  bit set (negative keys), so the two kinds never collide with each other.
* `parse_ints` parses decimal integers of up to 16 digits, with an optional minus
  sign, with SWAR arithmetic on the same 8-byte words (a digit check and three
  multiply-shift steps for the common 1 to 8 digits; negative and longer numbers
  apart) and flags anything else.
* `ordered_map` runs the per-chunk parsing in threads (numpy releases the GIL), in
  order.

Format-specific conversion (`mlctr.data.criteo`, `mlctr.data.avazu`) and the row
problem bookkeeping (`RowProblems`, `parse_chunk`) build on these.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import gzip
import hashlib
import os
import queue
import threading
import zlib
from typing import Callable, Iterator

import numpy as np

from mlctr.data.errors import DataError

DEFAULT_CHUNK_BYTES = 4 << 20
# Zero bytes appended to every chunk so an 8-byte word can be read at any field start.
_PAD = 16

_ASCII_HIGH_BITS = np.uint64(0x8080808080808080)
_ZEROS = np.uint64(0x3030303030303030)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_PLUS_SIX = np.uint64(0x0606060606060606)
_THREES = np.uint64(0x3333333333333333)
# _LOW_MASKS[n] keeps the lowest n bytes of a word.
_LOW_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)
_SHIFTS = np.array([8 * (8 - n) for n in range(9)], dtype=np.uint64)
_HASH_BIT = np.uint64(1 << 63)


# ---------------------------------------------------------------------------
# Streaming.


@dataclasses.dataclass
class RawChunk:
    """Whole lines of a raw file.

    Attributes:
        data: the lines, each ending in b"\\n" (a last line without one gets it appended).
        first_line: 1-based line number in the file of the first line in `data`.
        num_lines: number of lines in `data`.
        missing_final_newline: the file's last line had no newline (it is the last
            line of this chunk).
    """

    data: bytes
    first_line: int
    num_lines: int
    missing_final_newline: bool


class _HashingReader:
    """File object wrapper that hashes and counts the bytes read through it."""

    def __init__(self, fileobj):
        self._fileobj = fileobj
        self.sha256 = hashlib.sha256()
        self.num_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self.sha256.update(data)
        self.num_bytes += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self._fileobj.readinto(buffer)
        view = memoryview(buffer)[:n]
        self.sha256.update(view)
        self.num_bytes += n
        return n

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fileobj.close()


class RawFile:
    """A plain or gzip-compressed raw file streamed in chunks of whole lines.

    Gzip is detected from the magic bytes, not the name. After `chunks()` has run to the
    end, `sha256` and `num_bytes` describe the bytes on disk (compressed, for gzip).
    """

    def __init__(self, path: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.path = str(path)
        self.chunk_bytes = int(chunk_bytes)
        self.sha256: str | None = None
        self.num_bytes: int | None = None
        self.is_gzip = False

    def check_exists(self) -> None:
        """Raises DataError if the file is missing, not a file, or has no bytes."""
        if not os.path.exists(self.path):
            raise DataError(self.path, "no such file", reason="missing_file")
        if not os.path.isfile(self.path):
            raise DataError(self.path, "not a regular file", reason="missing_file")
        if os.path.getsize(self.path) == 0:
            raise DataError(self.path, "file is empty", reason="empty_file")

    def chunks(self, *, prefetch: int = 2) -> Iterator[RawChunk]:
        """Yields the file's lines in chunks, read ahead in a background thread.

        Args:
            prefetch: how many chunks the reading thread may hold ahead of the consumer.

        Yields:
            RawChunk objects in file order; at least one line in total, else DataError.

        Raises:
            DataError: missing or empty file, or corrupt gzip data.
        """
        self.check_exists()
        yield from background(self._read_chunks(), prefetch)

    def _read_chunks(self) -> Iterator[RawChunk]:
        with open(self.path, "rb") as raw_handle:
            hashing = _HashingReader(raw_handle)
            self.is_gzip = raw_handle.peek(2)[:2] == b"\x1f\x8b"
            stream = gzip.GzipFile(fileobj=hashing, mode="rb") if self.is_gzip else hashing
            next_line = 1
            rest = b""
            while True:
                try:
                    block = stream.read(self.chunk_bytes)
                except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
                    raise DataError(self.path, f"corrupt gzip data after {next_line - 1} "
                                    f"complete lines ({e})", line=next_line,
                                    reason="corrupt_gzip") from None
                if not block:
                    break
                block = rest + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:  # no newline yet: one very long line
                    rest = block
                    continue
                rest = block[cut:]
                data = block[:cut]
                num_lines = int(np.count_nonzero(np.frombuffer(data, np.uint8) == 10))
                yield RawChunk(data, next_line, num_lines, False)
                next_line += num_lines
            if rest:
                yield RawChunk(rest + b"\n", next_line, 1, True)
                next_line += 1
            # Drain the hashing reader (gzip may stop before the trailing bytes).
            while hashing.read(1 << 20):
                pass
            self.sha256 = hashing.sha256.hexdigest()
            self.num_bytes = hashing.num_bytes
        if next_line == 1:
            raise DataError(self.path, "file is empty (no lines)", reason="empty_file")


_END = object()


def background(iterator: Iterator, size: int) -> Iterator:
    """Runs `iterator` in a daemon thread, `size` items ahead; re-raises its errors.

    Closing the returned generator stops the thread and closes `iterator`.
    """
    if size <= 0:
        yield from iterator
        return
    items: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # surfaced in the consumer
            put(e)
        finally:
            if hasattr(iterator, "close"):
                iterator.close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def ordered_map(function: Callable, items: Iterator, num_threads: int) -> Iterator:
    """`function` over `items` in `num_threads` threads, results in order.

    Up to `num_threads` items are processed while the consumer works on the last
    result. Errors are re-raised in order; closing the returned generator waits for
    the running calls and closes `items`.
    """
    if num_threads <= 1:
        yield from background((function(item) for item in items), 1)
        return
    pending: collections.deque = collections.deque()
    pool = concurrent.futures.ThreadPoolExecutor(num_threads)
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > num_threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        if hasattr(items, "close"):
            items.close()


# ---------------------------------------------------------------------------
# Splitting lines into fields.


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
    buf = np.frombuffer(chunk.data + bytes(_PAD), dtype=np.uint8)
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


# ---------------------------------------------------------------------------
# Field values.


def _words(buf: np.ndarray) -> np.ndarray:
    """A view of `buf` where element i is the little-endian uint64 of bytes i..i+7."""
    return np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))


def _row_major(array: np.ndarray) -> np.ndarray:
    """`array.T` contiguous: [C', n] field views of row-major data become [n, C']."""
    return np.ascontiguousarray(array.T)


def string_keys(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Exact int64 keys of the strings at `starts` with `lengths` (see module doc).

    Args:
        buf: padded chunk bytes (uint8).
        starts: int64 offsets, any shape.
        lengths: int64 lengths, same shape.

    Returns:
        int64 keys, same shape: the bytes packed little-endian for ASCII strings of at
        most 8 bytes (the empty string is 0), else a hash with the top bit set.
    """
    # Computed on row-major contiguous copies (the fields of a line side by side), the
    # result transposed back (a view).
    starts, lengths = _row_major(starts), _row_major(lengths)
    keys = _words(buf)[starts]
    long = lengths.max(initial=0) > 8
    # Keep the lowest `length` bytes: shift the others out at the top and back.
    shift = np.minimum(lengths, 8) if long else lengths.copy()
    shift -= 8
    shift *= -8
    shift = shift.view(np.uint64)
    keys <<= shift
    keys >>= shift
    if long or (np.bitwise_or.reduce(keys, axis=None) & _ASCII_HIGH_BITS):
        where = np.nonzero((lengths > 8) | ((keys & _ASCII_HIGH_BITS) != 0))
        keys[where] = [hash_string_key(bytes(buf[start:start + length]))
                       for start, length in zip(starts[where].tolist(), lengths[where].tolist())]
    return keys.view(np.int64).T


def hash_string_key(value: bytes) -> int:
    """Key (as uint64) of a string longer than 8 bytes or non-ASCII: hash | top bit."""
    digest = hashlib.blake2b(value, digest_size=8).digest()
    return int.from_bytes(digest, "little") | (1 << 63)


def string_key(value: str | bytes) -> int:
    """The int64 key of one string, as `string_keys` computes it (for tests, lookups)."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) <= 8 and all(b < 0x80 for b in raw):
        key = int.from_bytes(raw, "little")
    else:
        key = hash_string_key(raw)
    return key - (1 << 64) if key >= (1 << 63) else key


def decode_string_key(key: int) -> str | None:
    """The string behind a key of at most 8 ASCII bytes; None for a hashed key."""
    key = int(key)
    if key < 0:
        return None
    return key.to_bytes(8, "little").rstrip(b"\0").decode("ascii")


def _swar_digits(words: np.ndarray, num_digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parses the lowest `num_digits` (0..8) bytes of each word as decimal digits."""
    kept = words & _LOW_MASKS[num_digits]
    # Move the digits to the top bytes and fill the low bytes with '0' (leading zeros).
    padded = (kept << _SHIFTS[num_digits]) | (_ZEROS & _LOW_MASKS[8 - num_digits])
    ok = ((padded & _HIGH_NIBBLES) == _ZEROS) & (((padded + _PLUS_SIX) & _HIGH_NIBBLES) == _ZEROS)
    digits = padded - _ZEROS  # byte 0 is the most significant digit
    pairs = (digits & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(10) + (
        (digits >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF))
    quads = (pairs & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(100) + (
        (pairs >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF))
    value = (quads & np.uint64(0xFFFFFFFF)) * np.uint64(10000) + (quads >> np.uint64(32))
    return value, ok


def _parse_words(words: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values (uint64) and validity of the text of 1 to 8 digits in the low bytes of words.

    The fast path of `parse_ints`: words and lengths are consumed (modified in place).
    """
    # Digits to the top bytes (the bytes past the text drop out), '0' below them.
    shift = lengths.view(np.uint64)
    shift -= np.uint64(8)
    shift *= np.uint64(-8 & 0xFFFFFFFFFFFFFFFF)  # 8 * (8 - length)
    words <<= shift
    words |= np.right_shift(_ZEROS, np.uint64(64) - shift)
    # Every byte a digit: high nibble 3 both as is and after adding 6 (the second one
    # moved to the low nibble, so that the byte reads 0x33).
    check = words + _PLUS_SIX
    check &= _HIGH_NIBBLES
    check >>= np.uint64(4)
    check |= words & _HIGH_NIBBLES
    ok = check == _THREES
    del check
    # Nibbles to a number: pairs, quads, then all 8 digits (byte 0 the most significant).
    words &= np.uint64(0x0F0F0F0F0F0F0F0F)
    words *= np.uint64(1 + (10 << 8))
    words >>= np.uint64(8)
    words &= np.uint64(0x00FF00FF00FF00FF)
    words *= np.uint64(1 + (100 << 16))
    words >>= np.uint64(16)
    words &= np.uint64(0x0000FFFF0000FFFF)
    words *= np.uint64(1 + (10000 << 32))
    words >>= np.uint64(32)
    return words, ok


def parse_ints(buf: np.ndarray, starts: np.ndarray,
               lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parses decimal integers (optional '-', 1 to 16 digits), vectorised.

    Args:
        buf: padded chunk bytes (uint8).
        starts: int64 offsets, any shape.
        lengths: int64 lengths, same shape.

    Returns:
        (values int64, ok bool): ok is False for anything but an integer, including the
        empty string and numbers of more than 16 digits; values there are arbitrary
        (0 for the empty string).
    """
    # Computed on row-major contiguous copies, the results transposed back (views).
    starts, lengths = _row_major(starts), _row_major(lengths)
    words = _words(buf)[starts]
    first = words & np.uint64(0xFF)
    negative = first == ord("-")
    negative &= lengths > 1
    special = lengths > 8  # long numbers, negative numbers: parsed apart
    special |= negative
    where = np.nonzero(special) if special.any() else None
    if where is not None:
        special_values, special_ok = _parse_ints_slow(buf, starts[where], lengths[where])
    empty = lengths == 0
    values, ok = _parse_words(words, np.minimum(lengths, 8))
    ok &= ~empty
    values = values.view(np.int64)
    if where is not None:
        values[where] = special_values
        ok[where] = special_ok
    return values.T, ok.T


def _parse_ints_slow(buf: np.ndarray, starts: np.ndarray,
                     lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`parse_ints` of any integers (long, negative), 1-D: two words per number."""
    negative = (buf[starts] == ord("-")) & (lengths > 1)
    digit_starts = starts + negative
    num_digits = lengths - negative
    ok = (num_digits >= 1) & (num_digits <= 16)
    num_digits = np.clip(num_digits, 0, 16)
    num_low = np.minimum(num_digits, 8)
    words = _words(buf)
    low, low_ok = _swar_digits(words[digit_starts + num_digits - num_low], num_low)
    high, high_ok = _swar_digits(words[digit_starts], num_digits - num_low)
    values = (high * np.uint64(10**8) + low).view(np.int64)
    ok &= low_ok & high_ok
    return np.where(negative, -values, values), ok


def parse_labels(buf: np.ndarray, starts: np.ndarray,
                 lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parses a 0/1 label column: (labels uint8, ok bool)."""
    first = buf[starts]
    ok = (lengths == 1) & ((first == ord("0")) | (first == ord("1")))
    return (first == ord("1")).astype(np.uint8), ok


# ---------------------------------------------------------------------------
# Row problems.


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
