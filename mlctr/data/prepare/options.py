"""What a prepare accepts: the dataset kinds, protocols and vocabulary modes, the raw
format modules, and the checked vocabulary options (`VocabOptions`)."""
from __future__ import annotations

import dataclasses
from typing import Any

from mlctr.data import avazu, bars_csv, criteo, criteo_1tb, hashing
from mlctr.data.prepare.encoders import Encoder, HashEncoder

CSV_DATASETS = tuple(bars_csv.FORMATS) + ("csv",)
DATASETS = ("criteo", "avazu", "synthetic", "criteo_1tb") + CSV_DATASETS
PROTOCOLS = ("x4_001", "x4_002")  # of the raw formats: they set min_count (criteo.MIN_COUNT)
# The csv datasets keep their given split and min_count; their feature map records these.
OWN_PROTOCOLS = {**{name: "x1" for name in bars_csv.FORMATS}, "csv": "csv"}
ALL_PROTOCOLS = PROTOCOLS + ("x1", "csv")
VOCAB_MODES = hashing.MODES
RAW_FORMATS = {"criteo": criteo, "avazu": avazu, "criteo_1tb": criteo_1tb}


def protocol_problem(dataset: str, protocol: str) -> str | None:
    """Why `protocol` does not apply to `dataset` (one line), or None when it does.

    The raw formats take x4_001 / x4_002; a csv dataset takes its own protocol (x1 for
    the BARS x1 sets, csv for a user's own), which its feature map records, and also
    x4_001, the default, standing for "unset" (it changes nothing there).
    """
    if protocol not in ALL_PROTOCOLS:
        return f"unknown protocol {protocol!r}; expected one of {ALL_PROTOCOLS}"
    own = OWN_PROTOCOLS.get(dataset)
    if own is None and protocol not in PROTOCOLS:
        return (f"protocol {protocol!r} is that of the csv datasets "
                f"({', '.join(OWN_PROTOCOLS)}); {dataset} takes one of {PROTOCOLS}")
    if own is not None and protocol not in (own, "x4_001"):
        return (f"protocol {protocol!r} does not apply to {dataset}: it keeps its given "
                f"split and min_count (protocol {own!r})")
    return None


def raw_format_module(name: str):
    """The module (criteo or avazu) that parses a raw format."""
    try:
        return RAW_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown raw format {name!r}; expected one of {sorted(RAW_FORMATS)}")


@dataclasses.dataclass(frozen=True)
class VocabOptions:
    """How a prepare gives ids: fitted vocabularies or hashed buckets (mlctr.data.hashing)."""

    mode: str = "fit"
    hash_buckets: int = hashing.DEFAULT_BUCKETS
    field_buckets: Any = None
    max_rows: int = 0

    @classmethod
    def make(cls, mode: str, *, hash_buckets, field_buckets, max_rows) -> "VocabOptions":
        """Checked options (ValueError: one line naming the bad argument)."""
        if mode not in VOCAB_MODES:
            raise ValueError(f"unknown vocab_mode {mode!r}; expected one of {VOCAB_MODES}")
        if mode == "fit" and field_buckets:
            raise ValueError("field_buckets is for vocab_mode='hash'")
        if mode == "fit" and int(hash_buckets) != hashing.DEFAULT_BUCKETS:
            raise ValueError(f"hash_buckets={hash_buckets} is for vocab_mode='hash' (a fitted "
                             "vocabulary has no buckets): pass --vocab_mode=hash, or drop it")
        hashing.field_bucket_counts([], hash_buckets=hash_buckets, max_rows=max_rows)
        return cls(mode, int(hash_buckets), field_buckets, int(max_rows))

    def encoder(self, out: str, module, with_true_prob: bool, writers: list):
        """The encoder writing `module`'s fields (a raw format or a CsvFormat)."""
        if self.mode == "hash":
            buckets = hashing.field_bucket_counts(
                module.FIELD_NAMES, hash_buckets=self.hash_buckets,
                field_buckets=self.field_buckets, max_rows=self.max_rows)
            return HashEncoder(out, module, with_true_prob, writers, buckets)
        return Encoder(out, module.FIELD_NAMES, with_true_prob, writers,
                        max_rows=self.max_rows)

    def min_count(self, min_count: int) -> int | None:
        """The feature map's min_count: none applies to hashed ids."""
        return None if self.mode == "hash" else min_count

    def feature_map_entry(self) -> dict:
        """The feature map's `vocab` key; none for plain fitted vocabularies (as before
        the option existed, so that their datasets stay byte for byte the same)."""
        if self.mode == "hash":
            return {"vocab": {"mode": "hash", "hash": "splitmix64 of (key, field index)",
                              "hash_version": hashing.HASH_VERSION,
                              "hash_buckets": self.hash_buckets,
                              "max_rows": self.max_rows, "missing_id": 0}}
        if self.max_rows:
            return {"vocab": {"mode": "fit", "max_rows": self.max_rows}}
        return {}
