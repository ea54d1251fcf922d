"""Field values from their bytes, vectorised: exact string keys, integers, labels.

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

The chunk buffer must carry `mlctr.data.parsing.lines.PAD` zero bytes past its end.
"""

from __future__ import annotations

import hashlib

import numpy as np

_ASCII_HIGH_BITS = np.uint64(0x8080808080808080)
_ZEROS = np.uint64(0x3030303030303030)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_PLUS_SIX = np.uint64(0x0606060606060606)
_THREES = np.uint64(0x3333333333333333)
# _LOW_MASKS[n] keeps the lowest n bytes of a word.
_LOW_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)
_SHIFTS = np.array([8 * (8 - n) for n in range(9)], dtype=np.uint64)


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
