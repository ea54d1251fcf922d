"""The raw-text writer of the synthetic generator (Criteo tab-separated, Avazu csv).

Every raw column value is one little-endian uint64 word of at most 8 bytes of text,
NUL-padded, looked up in a table built once (hex strings, decimal integers with their
separator). A chunk's rows are assembled in a fixed-width uint8 matrix with one slot per
column: a word whose text and separator fit in 8 bytes is written with its separator (an
unaligned 8-byte store through a strided view; its NUL bytes spill into the next slot,
which is written after it), an 8-byte word then its separator byte. One boolean mask then
strips the NUL padding of all rows at once.
"""

from __future__ import annotations

import threading

import numpy as np

TAB, COMMA, NEWLINE = ord("\t"), ord(","), ord("\n")
_MINUS = np.uint64(ord("-"))


def _pack(text: bytes) -> int:
    return int.from_bytes(text, "little")


_DECIMAL_WORDS = np.array([_pack(str(v).encode()) for v in range(10_000)], np.uint64)
_DECIMAL_LENGTHS = np.array([len(str(v)) for v in range(10_000)], np.int64)
_PADDED4_WORDS = np.array([_pack(f"{v:04d}".encode()) for v in range(10_000)], np.uint64)


def int_tokens(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal text words and lengths of integers in [-9_999_999, 99_999_999]."""
    magnitude = np.abs(values)
    high, low = np.divmod(magnitude, 10_000)
    high_lengths = _DECIMAL_LENGTHS[high]
    long = high > 0
    words = np.where(long, _DECIMAL_WORDS[high] | (_PADDED4_WORDS[low] << (
        8 * high_lengths).astype(np.uint64)), _DECIMAL_WORDS[low])
    lengths = np.where(long, high_lengths + 4, _DECIMAL_LENGTHS[low])
    negative = values < 0
    if negative.any():
        words = np.where(negative, (words << np.uint64(8)) | _MINUS, words)
        lengths = lengths + negative
    return words, lengths


def with_separator(words: np.ndarray, lengths: np.ndarray, separator: int) -> np.ndarray:
    """Text words with `separator` appended (text of at most 7 bytes)."""
    if len(lengths) and lengths.max() > 7:
        raise ValueError("text too long for an 8-byte word with its separator")
    return words | (np.uint64(separator) << (8 * np.asarray(lengths)).astype(np.uint64))


def padded8_words(values: np.ndarray) -> np.ndarray:
    """8-digit zero-padded decimal words of integers in [0, 10^8)."""
    high, low = np.divmod(values, 10_000)
    return _PADDED4_WORDS[high] | (_PADDED4_WORDS[low] << np.uint64(32))


def hex_words(values: np.ndarray) -> np.ndarray:
    """8-hex-digit lowercase text words of uint32 values (SWAR nibble spreading)."""
    x = values.astype(np.uint64)
    x = (x | (x << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x | (x << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    x = x.byteswap()  # most significant nibble first
    letters = ((x + np.uint64(0x0606060606060606)) >> np.uint64(4)) & np.uint64(0x0101010101010101)
    return x + np.uint64(0x3030303030303030) + letters * np.uint64(ord("a") - ord("0") - 10)


def scramble32(ranks: np.ndarray, salt) -> np.ndarray:
    """A bijection of uint32 per column (distinct ranks give distinct hex strings)."""
    x = (ranks.astype(np.uint64) + np.uint64(salt)) & np.uint64(0xFFFFFFFF)
    for multiplier in (0x7FEB352D, 0x846CA68B):
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(multiplier)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x


_ROWS = threading.local()


def _row_matrix(n: int, width: int) -> np.ndarray:
    """A uint8 [n, width] matrix reused by the calling thread (contents undefined)."""
    buffer = getattr(_ROWS, "buffer", None)
    if buffer is None or len(buffer) < n * width:
        buffer = _ROWS.buffer = np.empty(n * width, np.uint8)
    return buffer[:n * width].reshape(n, width)


def _store_words(rows: np.ndarray, offset: int, words: np.ndarray, stride: int = 9) -> None:
    """Writes words [n] or [n, k] (uint64) at byte `offset` (+ j * stride) of every row."""
    n, width = rows.shape
    words = words.reshape(n, -1)
    view = np.ndarray((n, words.shape[1]), "<u8", rows, offset, (width, stride))
    view[...] = words


def _store_bytes(rows: np.ndarray, offset: int, values, count: int = 1,
                 stride: int = 9) -> None:
    """Writes bytes [n] / [count] / [n, count] at `offset` (+ j * stride) of every row."""
    n, width = rows.shape
    view = np.ndarray((n, count), np.uint8, rows, offset, (width, stride))
    view[...] = np.reshape(values, (n, count) if np.size(values) == n * count else (count,))


def _strip(rows: np.ndarray) -> np.ndarray:
    """The rows' text without the NUL padding, as uint8."""
    flat = rows.reshape(-1)
    return flat[flat != 0]


class RawText:
    """Text of the rows drawn by `synthetic_marginals.Marginals`: value words, row layout.

    Args:
        rows: the marginals the rows are drawn from (a `synthetic_marginals.Marginals`:
            its raw_format, fields, offsets, num_ids, columns, int_max, int_negative and
            dates are read).
        salts: uint64 per categorical field, the scramble of its hex strings.
    """

    def __init__(self, rows, salts: np.ndarray):
        self.raw_format = rows.raw_format
        self.fields, self.offsets = rows.fields, rows.offsets
        self._columns = rows.columns  # Avazu: (name, kind, cardinality, first value)
        self._dates = rows.dates
        self.text_fields = np.array([i for i, f in enumerate(self.fields) if f.cardinality])
        # The text word of every categorical value id (0 for missing values).
        self.words = np.zeros(int(rows.num_ids), np.uint64)
        for i, salt in zip(self.text_fields, salts):
            f, first = self.fields[i], self.offsets[i] + 1
            self.words[first:first + f.cardinality] = self._value_text(i, salt)
        if self.raw_format == "criteo":
            self._criteo_layout(rows.int_max, rows.int_negative)
        else:
            self._avazu_layout()

    def _value_text(self, field: int, salt) -> np.ndarray:
        """Text words of the values (ranks 0..K-1) of a categorical field."""
        f = self.fields[field]
        ranks = np.arange(f.cardinality)
        if self.raw_format == "criteo":
            return hex_words(scramble32(ranks, salt))
        name, kind, _, first_value = self._columns[field - 1]
        if kind == "hex":
            return hex_words(scramble32(ranks, salt))
        values = first_value + ranks
        if name == "C20":  # Avazu's C20 uses -1 for its most common value
            values = np.where(ranks == 0, -1, values)
        words, lengths = int_tokens(values)
        last = field == len(self._columns)
        return with_separator(words, lengths, NEWLINE if last else COMMA)

    def _criteo_layout(self, int_max: list[int], int_negative: list[bool]) -> None:
        # label "\t" then the integers (widest text of each column) then 9-byte hex slots.
        widths = [max(len(str(v)), 2 if negative else 1) + 1
                  for v, negative in zip(int_max, int_negative)]
        if max(widths) > 8:
            raise ValueError("a Criteo integer column exceeds 7 digits")
        self._int_offsets = 2 + np.concatenate([[0], np.cumsum(widths)[:-1]])
        self._hex_offset = 2 + sum(widths)
        self._row_width = self._hex_offset + 9 * len(self.text_fields)

    def _avazu_layout(self) -> None:
        # id (16 digits: two words) "," click "," hour (8 digits) "," then the columns.
        self._avazu_columns = []  # (kind, offset) of the 21 columns
        offset = 28
        for j, (_, kind, _, _) in enumerate(self._columns):
            self._avazu_columns.append((kind, offset))
            if kind == "hex":
                offset += 9
            else:
                field = j + 1
                first = self.offsets[field] + 1
                words = self.words[first:first + self.fields[field].cardinality]
                offset += max(1, (int(np.max(words)).bit_length() + 7) // 8)
        self._avazu_end = offset
        self._row_width = max(offset, max(o for _, o in self._avazu_columns) + 8)

    def set_text(self, block) -> None:
        """Sets `block.text`, the categorical columns' text words."""
        block.text = self.words.take(block.columns[self.text_fields])

    def rows(self, block, labels: np.ndarray) -> np.ndarray:
        """The rows' raw text (uint8) of a `synthetic_marginals.Block` and its labels."""
        if block.text is None:
            self.set_text(block)
        rows = _row_matrix(len(labels), self._row_width)
        if self.raw_format == "criteo":
            return self._criteo_rows(rows, block, labels)
        return self._avazu_rows(rows, block, labels)

    def _criteo_rows(self, rows, block, labels) -> np.ndarray:
        # Inline words left to right: "0\t" / "1\t", then the integers with their tabs.
        _store_words(rows, 0, labels.astype(np.uint64) + np.uint64(ord("0") | TAB << 8))
        for j in range(len(self._int_offsets)):
            _store_words(rows, int(self._int_offsets[j]), block.words[j])
        text = block.text
        num_cat = len(text)
        for j in range(num_cat):  # (one store of text.T would be slower)
            _store_words(rows, self._hex_offset + 9 * j, text[j])
        separators = np.full(num_cat, TAB, np.uint8)
        separators[-1] = NEWLINE
        _store_bytes(rows, self._hex_offset + 8, separators, count=num_cat)
        return _strip(rows)

    def _avazu_rows(self, rows, block, labels) -> np.ndarray:
        # Inline words left to right (click, integer columns), then 8-byte words (id,
        # hour, hex columns) and their separator bytes.
        _store_words(rows, 17, labels.astype(np.uint64) + np.uint64(ord("0") | COMMA << 8))
        text = block.text
        hex_columns = []
        for j, (kind, offset) in enumerate(self._avazu_columns):
            if kind == "hex":
                hex_columns.append((j, offset))
            else:
                _store_words(rows, offset, text[j])
        rows[:, self._avazu_end:] = 0
        row_bits = (block.bits[1].astype(np.uint64) << np.uint64(32)) | block.bits[2]
        row_ids = (row_bits % np.uint64(9 * 10**15)).astype(np.int64) + 10**15
        _store_words(rows, 0, np.stack([padded8_words(row_ids // 10**8),
                                        padded8_words(row_ids % 10**8)], axis=1), stride=8)
        date_code = np.array([(d.year % 100) * 10**6 + d.month * 10**4 + d.day * 100
                              for d in self._dates])
        day = block.day
        hour = block.columns[0] - self.offsets[0]
        _store_words(rows, 19, padded8_words(date_code[day] + hour))
        for j, offset in hex_columns:
            _store_words(rows, offset, text[j])
            _store_bytes(rows, offset + 8, COMMA)
        _store_bytes(rows, 16, COMMA)
        _store_bytes(rows, 27, COMMA)
        return _strip(rows)
