"""Hashed vocabularies: each field's values hashed into a fixed number of buckets.

A fitted vocabulary (`mlctr.data.vocab`) needs a pass over the whole train split before
the first id can be written, and a table row per distinct value: fine for Criteo_x4,
not for unbounded id spaces (the Criteo 1TB logs hold ~800M distinct values). In hash
mode each value's id is a pure function of the value, its field and the field's bucket
count, so `prepare` writes final ids in its single streaming pass (no vocabulary pass,
no rewrite of temporary codes) and files prepared apart (another process, another day)
agree on every id.

The hash. A field value is first its exact int64 key (`mlctr.data.parsing`: the bytes
of a string of up to 8 ASCII bytes, little-endian, else a BLAKE2b-based key; for a
numeric field the bucketed integer). Field f (0-based) hashes key k with splitmix64:

    x = (k mod 2^64) + (f + 1) * 0x9E3779B97F4A7C15   (mod 2^64)
    h = mix64(x)                                       (the splitmix64 finaliser)
    local id = 1 + h mod num_buckets_f

in fixed-width unsigned 64-bit arithmetic, so the ids are the same in every process,
on every platform and in every Python run (never Python's salted `hash()`).
`HASH_VERSION` names this function in the feature map; changing it means a new version.

Local id 0 of every field is reserved for a missing value (the field's `missing_key`),
as the OOV id 0 is in fit mode, so a missing value never shares a row with a real one;
distinct values may share a bucket (the price of a bounded table). Field f owns global
ids [offset_f, offset_f + num_buckets_f + 1).
"""

from __future__ import annotations

import numpy as np

from mlctr.data.vocab import mix64

HASH_VERSION = 1
GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: splitmix64's increment
DEFAULT_BUCKETS = 1 << 20
MODES = ("fit", "hash")


def hash_keys(keys: np.ndarray, field_index: int) -> np.ndarray:
    """The 64-bit hash (uint64) of field `field_index`'s int64 keys (see module doc)."""
    salt = np.uint64((int(field_index) + 1) * GOLDEN % (1 << 64))
    x = np.asarray(keys, np.int64).view(np.uint64) + salt  # wraps modulo 2^64
    return mix64(x, copy=False)


def bucket_ids(keys: np.ndarray, field_index: int, num_buckets: int,
               missing_key: int | None) -> np.ndarray:
    """Local ids in [0, num_buckets] of one field's keys: 0 for missing, else a bucket.

    Args:
        keys: int64 [n] keys of the field's values.
        field_index: the field's 0-based position (part of the hash).
        num_buckets: buckets of the field (>= 1).
        missing_key: the key meaning "missing" (local id 0), or None.

    Returns:
        int32 [n] local ids.
    """
    keys = np.asarray(keys, np.int64)
    hashes = hash_keys(keys, field_index)
    if num_buckets & (num_buckets - 1) == 0:  # a power of 2: the same value, cheaper
        np.bitwise_and(hashes, np.uint64(num_buckets - 1), out=hashes)
    else:
        np.remainder(hashes, np.uint64(num_buckets), out=hashes)
    ids = hashes.astype(np.int32)
    ids += 1
    if missing_key is not None:
        ids[keys == missing_key] = 0
    return ids


def hash_ids(keys: np.ndarray, buckets: list[int], missing_keys: list,
             offsets: np.ndarray) -> np.ndarray:
    """int32 [n, F] global hashed ids of int64 keys [n, F] (see bucket_ids)."""
    ids = np.empty((keys.shape[1], len(keys)), np.int32)
    for f, count in enumerate(buckets):
        ids[f] = bucket_ids(keys[:, f], f, count, missing_keys[f])
        ids[f] += offsets[f]
    return ids.T


def parse_field_buckets(spec, field_names: list[str]) -> dict[str, int]:
    """Per-field bucket counts from "name=count,name=count" (or a dict).

    Raises:
        ValueError: an unknown field name, or a count that is not an integer >= 1 (one
            line naming the entry).
    """
    if not spec:
        return {}
    if isinstance(spec, str):
        entries = {}
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            name, sep, count = item.partition("=")
            if not sep:
                raise ValueError(f"field_buckets entry {item!r}: expected name=count")
            if name.strip() in entries:
                raise ValueError(f"field_buckets: field {name.strip()!r} is given twice "
                                 f"({name.strip()}={entries[name.strip()]} and {item}): "
                                 "keep one")
            entries[name.strip()] = count.strip()
    else:
        entries = dict(spec)
    result = {}
    for name, count in entries.items():
        if name not in field_names:
            raise ValueError(f"field_buckets: unknown field {name!r}; fields are "
                             f"{', '.join(field_names)}")
        try:
            value = int(count)
        except (TypeError, ValueError):
            value = 0
        if value < 1 or str(count).strip() != str(value):
            raise ValueError(f"field_buckets: {name}={count!r} is not an integer >= 1")
        result[name] = value
    return result


def field_bucket_counts(field_names: list[str], *, hash_buckets: int = DEFAULT_BUCKETS,
                        field_buckets=None, max_rows: int = 0) -> list[int]:
    """The bucket count of every field: `hash_buckets`, per-field overrides, the cap.

    Args:
        field_names: the fields, in column order.
        hash_buckets: buckets of a field without an override.
        field_buckets: overrides, "name=count,..." or a dict.
        max_rows: > 0 caps every field's table at max_rows rows (buckets + the reserved
            missing id), as MLPerf DLRM caps each Criteo 1TB table at 40M rows.

    Returns:
        int [F] buckets per field.
    """
    if int(hash_buckets) < 1:
        raise ValueError(f"hash_buckets must be an integer >= 1 (got {hash_buckets!r})")
    if int(max_rows) < 0 or int(max_rows) == 1:
        raise ValueError(f"max_rows must be 0 (no cap) or >= 2 (got {max_rows!r})")
    overrides = parse_field_buckets(field_buckets, list(field_names))
    counts = [overrides.get(name, int(hash_buckets)) for name in field_names]
    if max_rows:
        counts = [min(c, int(max_rows) - 1) for c in counts]
    return counts


def field_offsets(buckets: list[int]) -> np.ndarray:
    """int64 [F]: the first global id of each field; field f owns buckets[f] + 1 ids
    (its first, offsets[f], is the missing value's).

    Raises:
        ValueError: the ids in all would not fit the int32 ids of a dataset.
    """
    offsets = np.cumsum([0] + [b + 1 for b in buckets[:-1]]).astype(np.int64)
    if offsets[-1] + buckets[-1] + 1 > np.iinfo(np.int32).max:
        raise ValueError(f"{sum(b + 1 for b in buckets)} ids in all: more than the "
                         "int32 ids hold; lower hash_buckets or max_rows")
    return offsets


def feature_map_fields(field_names: list[str], field_kinds, buckets: list[int],
                       offsets: np.ndarray) -> list[dict]:
    """The feature map's per-field entries of a hash-mode dataset."""
    return [{"name": name, "kind": field_kinds[f], "vocab_size": buckets[f] + 1,
             "offset": int(offsets[f]), "oov_id": int(offsets[f]),
             "hash_buckets": buckets[f]}
            for f, name in enumerate(field_names)]
