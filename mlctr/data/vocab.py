"""Per-field vocabularies: counting values while streaming, fitting, saving, encoding.

While `prepare` streams the raw file, each field's values (int64 keys from
`mlctr.data.parsing`) go through a `KeyCoder`, a vectorised open-addressing hash table
that gives every distinct key a dense temporary code in first-seen order; the codes are
written to disk at once and the train-split occurrences of each code are counted. Once
the whole file is read, `fit_vocabulary` keeps the keys seen at least `min_count` times
in the train split and gives them the ids 1..V in sorted key order; id 0 of each field
is its OOV id, shared by rare values, values unseen in train and missing values
(as FuxiCTR does). `code_to_id` then maps each temporary code to its final id.

On disk a field's vocabulary is `vocab/<field>.npy`: the sorted int64 keys of its ids
1..V (no pickle). `encode_keys` maps new keys with it (`np.searchsorted`).
"""

from __future__ import annotations

import os

import numpy as np

# The finaliser of splitmix64: a cheap, well-mixing hash of 64-bit keys.
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def mix64(keys: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """splitmix64 finaliser of int64/uint64 keys, as uint64 (in place when `copy` is
    False and `keys` is uint64)."""
    x = keys.astype(np.uint64, copy=copy)
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd


class KeyCoder:
    """Dense codes 0..n-1 for int64 keys, in first-seen order, vectorised.

    While all keys seen lie in a range narrower than `dense_limit` (numeric buckets,
    hours, small integer columns) a code is one array lookup at `key - low`. Otherwise
    an open-addressing hash table (linear probing, Fibonacci hashing) of int32 slots
    holding code + 1 (0: empty), the keys themselves read from `keys[code + 1]`
    (`keys[0]`, read for empty slots, is never taken for a match): about 20-40 bytes per
    distinct value in all, small next to the parsing buffers. The table is kept at most
    1/8 full while small (up to 2^16 slots) and 1/2 full after that; when several keys
    race for a slot the smallest code (the value seen first, mostly a frequent one)
    wins, so nearly all lookups take one probe: two gathers and a compare per key. The
    few keys whose slot holds another key probe on in rounds over fewer and fewer keys,
    so a chunk of keys costs a few numpy passes, not a Python loop. Codes never change
    once given (tables are rebuilt from the keys with their codes), so codes written
    to disk early stay valid.

    Args:
        dense_limit: widest key range coded by direct lookup.
    """

    def __init__(self, dense_limit: int = 1 << 20):
        self.dense_limit = dense_limit
        self.keys = np.zeros(64, np.int64)  # keys[code + 1]: key of each code
        self.size = 0
        self._dense: np.ndarray | None = np.zeros(0, np.int32)  # None: hash mode
        self._dense_low = 0
        self._slots: np.ndarray | None = None
        self._shift = np.uint64(64)

    def __len__(self) -> int:
        return self.size

    def code_keys(self) -> np.ndarray:
        """int64 [n]: the key of each code."""
        return self.keys[1:self.size + 1]

    def encode(self, keys: np.ndarray) -> np.ndarray:
        """Codes of `keys`, giving new codes to keys not seen before.

        Args:
            keys: int64 [n].

        Returns:
            int32 [n] codes.
        """
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if not len(keys):
            return np.zeros(0, np.int32)
        if self._dense is not None and self._dense_covers(keys):
            codes = self._dense.take(keys - self._dense_low)
        else:
            codes = self._lookup(keys)
        new = codes < 0
        if new.any():
            new_keys, inverse = np.unique(keys[new], return_inverse=True)
            new_codes = self._add(new_keys)
            codes[new] = new_codes[inverse.reshape(-1)]
        return codes

    # -- dense mode ----------------------------------------------------------------

    def _dense_covers(self, keys: np.ndarray) -> bool:
        """Makes the dense table cover `keys` if the range allows; False -> hash mode."""
        low, high = int(keys.min()), int(keys.max())
        dense_high = self._dense_low + len(self._dense) - 1
        if len(self._dense) and low >= self._dense_low and high <= dense_high:
            return True
        if len(self._dense):
            low, high = min(low, self._dense_low), max(high, dense_high)
        if high - low >= self.dense_limit:
            self._to_hash_mode()
            return False
        self._dense_low = low
        self._dense = np.full(high - low + 1, -1, np.int32)
        self._dense[self.code_keys() - low] = np.arange(self.size, dtype=np.int32)
        return True

    def _to_hash_mode(self) -> None:
        self._dense = None
        self._new_table(self._table_size())

    _SMALL_TABLE = 1 << 16

    @classmethod
    def _load_limit(cls, slots: int) -> int:
        """Most keys in a table of `slots`: 1/8 while small (a few hundred KB at most,
        the frequent values nearly all in their home slots), then 1/2."""
        return slots // 8 if slots <= cls._SMALL_TABLE else slots // 2

    def _table_size(self) -> int:
        slots = 64
        while self.size > self._load_limit(slots):
            slots *= 2
        return slots

    def _new_table(self, size: int) -> None:
        """An empty table of `size` (a power of 2) slots, then every code inserted."""
        self._slots = None  # free the old table first
        self._slots = np.zeros(size, np.int32)
        self._shift = np.uint64(64 - (size.bit_length() - 1))
        self._insert_new(self.code_keys(), np.arange(self.size, dtype=np.int32))

    def _add(self, new_keys: np.ndarray) -> np.ndarray:
        """Gives codes to distinct, absent keys; returns them."""
        start, count = self.size, len(new_keys)
        if start + count + 1 > len(self.keys):
            grown = np.zeros(max(len(self.keys) * 3 // 2, start + count + 1), np.int64)
            grown[:start + 1] = self.keys[:start + 1]
            self.keys = grown
        self.keys[start + 1:start + count + 1] = new_keys
        new_codes = np.arange(start, start + count, dtype=np.int32)
        self.size += count
        if self._dense is not None:
            self._dense[new_keys - self._dense_low] = new_codes
        elif self.size > self._load_limit(len(self._slots)):
            self._new_table(self._table_size())
        else:
            self._insert_new(new_keys, new_codes)
        return new_codes

    # -- hash mode -----------------------------------------------------------------

    def _home(self, keys: np.ndarray) -> np.ndarray:
        """The first slot of each key (Fibonacci hashing: the top bits of key * phi)."""
        slots = keys.view(np.uint64) * _FIBONACCI
        slots >>= self._shift
        return slots.view(np.int64)

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        """Codes of `keys` (-1 where absent)."""
        mask = len(self._slots) - 1
        slots = self._home(keys)
        values = self._slots.take(slots)  # code + 1, 0: empty
        found = self.keys.take(values) == keys
        codes = values - 1  # right where found (-1: an empty slot, the sentinel matched)
        missed = np.flatnonzero(~found)
        if len(missed):
            # Where the slot is empty the key is absent; else another key holds it: probe
            # on, in rounds over fewer and fewer keys.
            codes[missed] = -1
            active = missed[values[missed] > 0]
            slots, pending = slots[active], keys[active]
            while len(active):
                slots = (slots + 1) & mask
                values = self._slots[slots]
                found = self.keys[values] == pending
                codes[active[found]] = values[found] - 1
                more = ~found & (values > 0)
                active, slots, pending = active[more], slots[more], pending[more]
        return codes

    def _insert_new(self, keys: np.ndarray, codes: np.ndarray) -> None:
        """Inserts distinct keys known to be absent, with their (already stored) codes."""
        mask = len(self._slots) - 1
        slots = self._home(keys)
        values = codes + 1
        while len(keys):
            empty = self._slots[slots] == 0
            # Several keys may race for one empty slot: the smallest code wins (written
            # last), the others see the slot taken in the next round and probe on. Small
            # codes are the values seen first, mostly the frequent ones: they get their
            # home slots, and most lookups one probe.
            self._slots[slots[empty][::-1]] = values[empty][::-1]
            won = np.zeros(len(keys), bool)
            won[empty] = self._slots[slots[empty]] == values[empty]
            lost = ~won
            keys, values = keys[lost], values[lost]
            slots = np.where(empty[lost], slots[lost], (slots[lost] + 1) & mask)


class Counts:
    """A growable counter indexed by code (int32: up to 2^31 - 1 rows per value)."""

    def __init__(self):
        self.counts = np.zeros(64, np.int32)

    def add(self, codes: np.ndarray, num_codes: int) -> None:
        """Counts one occurrence of each of `codes` (all < num_codes)."""
        if num_codes > len(self.counts):
            grown = np.zeros(max(num_codes, len(self.counts) * 3 // 2), np.int32)
            grown[:len(self.counts)] = self.counts
            self.counts = grown
        if not len(codes):
            return
        top = int(codes.max()) + 1
        # bincount costs O(top): fine for small codes (frequent values get them first);
        # the rare large ones are counted by sorting.
        limit = 4 * len(codes) + 1024
        if top <= limit:
            self.counts[:top] += np.bincount(codes, minlength=top).astype(np.int32)
            return
        large = codes >= limit
        small = codes[~large]
        if len(small):
            top = int(small.max()) + 1
            self.counts[:top] += np.bincount(small, minlength=top).astype(np.int32)
        values, counts = np.unique(codes[large], return_counts=True)
        self.counts[values] += counts.astype(np.int32)


def fit_vocabulary(code_keys: np.ndarray, train_counts: np.ndarray, *, min_count: int,
                   missing_key: int | None, max_rows: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Keeps the keys seen at least `min_count` times in train; maps codes to local ids.

    Args:
        code_keys: int64 [n] the key of each temporary code.
        train_counts: [>= n] train-split occurrences of each code.
        min_count: BARS `min_categr_count`: rarer values map to OOV.
        missing_key: the key that means "missing" for this field (always OOV), or None.
        max_rows: > 0 caps the field's table at max_rows rows (OOV included): only the
            max_rows - 1 most frequent kept keys stay (ties: the smaller key), the
            others map to OOV.

    Returns:
        (vocab_keys, local_ids): the kept keys sorted (id i+1 is vocab_keys[i]), and
        int32 [n] the local id of each code (0 = OOV).
    """
    counts = train_counts[:len(code_keys)]
    kept = counts >= min_count
    if missing_key is not None:
        kept &= code_keys != missing_key
    kept_codes = np.flatnonzero(kept)
    if max_rows and len(kept_codes) > max_rows - 1:
        # Most frequent first, ties by key: lexsort's last key is the primary one.
        by_count = np.lexsort((code_keys[kept_codes], -counts[kept_codes].astype(np.int64)))
        kept_codes = kept_codes[by_count[:max_rows - 1]]
    order = np.argsort(code_keys[kept_codes], kind="stable")
    local_ids = np.zeros(len(code_keys), np.int32)
    local_ids[kept_codes[order]] = np.arange(1, len(kept_codes) + 1, dtype=np.int32)
    return code_keys[kept_codes[order]], local_ids


def vocab_path(data_dir: str, field: str) -> str:
    """Where a field's vocabulary lives; a field name that is not one plain path component
    (`/`, `..`, a leading `.`) is refused, never joined (a spec's names are checked with
    a one-line error before this: mlctr.data.bars_csv)."""
    if os.path.basename(field) != field or field.startswith(".") or not field:
        raise ValueError(f"field name {field!r} cannot name a vocabulary file")
    return os.path.join(data_dir, "vocab", f"{field}.npy")


def save_vocabulary(data_dir: str, field: str, vocab_keys: np.ndarray) -> str:
    """Writes a field's sorted keys to vocab/<field>.npy; returns the path."""
    path = vocab_path(data_dir, field)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.asarray(vocab_keys, np.int64), allow_pickle=False)
    return path


def load_vocabulary(data_dir: str, field: str) -> np.ndarray:
    """The sorted int64 keys of a field's ids 1..V."""
    return np.load(vocab_path(data_dir, field), allow_pickle=False)


def encode_keys(vocab_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Local ids of `keys` under a fitted vocabulary (0 = OOV).

    Args:
        vocab_keys: sorted int64 keys of ids 1..V.
        keys: int64 [...] keys to encode.

    Returns:
        int32 local ids, same shape as keys.
    """
    if len(vocab_keys) == 0:
        return np.zeros(keys.shape, np.int32)
    pos = np.searchsorted(vocab_keys, keys)
    pos_clipped = np.minimum(pos, len(vocab_keys) - 1)
    found = vocab_keys[pos_clipped] == keys
    return np.where(found, pos_clipped + 1, 0).astype(np.int32)
