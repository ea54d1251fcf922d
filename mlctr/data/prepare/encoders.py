"""The encoders of a prepare: rows -> split files of temporary codes -> fitted
vocabularies and global ids (`Encoder`), or rows -> hashed global ids in one pass
(`HashEncoder`, mlctr.data.hashing)."""
from __future__ import annotations

import numpy as np

from mlctr import xla_cpu
from mlctr.data import hashing, layout
from mlctr.data import vocab as vocab_lib

PARSE_THREADS = 2  # parsing (and remapping) threads; the coding runs in the caller's
_REMAP_ROWS = 1 << 15


class Encoder:
    """Pass 1 and 2 of prepare: rows -> temporary codes on disk -> vocabularies, global ids.

    Args:
        out: the (build) directory the split files are written into.
        field_names: the F output fields.
        with_true_prob: also write each split's true probabilities (synthetic data).
        writers: a list the open writers are appended to (the caller closes them on
            failure).
        max_rows: > 0 caps every field's table (mlctr.data.vocab.fit_vocabulary).
    """

    def __init__(self, out: str, field_names, with_true_prob: bool, writers: list, *,
                 max_rows: int = 0):
        self.out = out
        self.field_names = list(field_names)
        self.max_rows = max_rows
        self.coders = [vocab_lib.KeyCoder() for _ in self.field_names]
        self.counts = [vocab_lib.Counts() for _ in self.field_names]
        self.positives = np.zeros(3, np.int64)
        self.num_rows = 0

        def writer(path, dtype, row_shape=()):
            writers.append(layout.NpyWriter(path, dtype, row_shape))
            return writers[-1]

        self.ids_out = [writer(layout.ids_path(out, s), np.int32, (len(self.field_names),))
                        for s in layout.SPLITS]
        self.label_out = [writer(layout.label_path(out, s), np.uint8) for s in layout.SPLITS]
        self.prob_out = ([writer(layout.true_prob_path(out, s), np.float32) for s in layout.SPLITS]
                         if with_true_prob else None)

    def add(self, keys: np.ndarray, labels: np.ndarray, splits: np.ndarray,
            probs: np.ndarray | None = None) -> None:
        """Codes rows (int64 keys [n, F], uint8 labels, split of each row) and writes them."""
        self.num_rows += len(labels)
        # The rows in split order (train, valid, test; file order within each), so that
        # each split's rows are one slice.
        order = np.argsort(splits, kind="stable")
        bounds = np.cumsum(np.bincount(splits, minlength=3))
        codes = self._codes(keys, order[:bounds[0]])
        codes = codes.T[order]  # rows again, in split order
        labels = labels.take(order)
        probs = probs.take(order) if probs is not None else None
        for s in range(3):
            rows = slice(bounds[s - 1] if s else 0, bounds[s])
            self.ids_out[s].append(codes[rows])
            self.label_out[s].append(labels[rows])
            self.positives[s] += int(np.count_nonzero(labels[rows]))
            if probs is not None:
                self.prob_out[s].append(probs[rows])

    def _codes(self, keys: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
        """int32 [F, n] temporary codes of int64 keys [n, F]; counts the train rows'."""
        codes = np.empty((len(self.field_names), len(keys)), np.int32)
        for f, coder in enumerate(self.coders):
            codes[f] = coder.encode(keys[:, f])
            self.counts[f].add(codes[f].take(train_rows), len(coder))
        return codes

    def _close(self) -> None:
        for w in self.ids_out + self.label_out + (self.prob_out or []):
            w.close()

    def _split_entries(self) -> dict:
        """The feature map's per-split entries."""
        splits = {}
        for s, name in enumerate(layout.SPLITS):
            n = self.ids_out[s].num_rows
            splits[name] = {"num_examples": n,
                            "positive_rate": float(self.positives[s] / n) if n else None}
        return splits

    def finish(self, module, min_count: int) -> tuple[list[dict], dict]:
        """Closes the files, fits and saves the vocabularies, rewrites codes as global ids.

        Returns:
            (fields: the feature map's per-field entries, splits: its per-split entries).
        """
        self._close()
        fields, code_to_global, offset = [], [], 0
        for f, name in enumerate(self.field_names):
            vocab_keys, local_ids = vocab_lib.fit_vocabulary(
                self.coders[f].code_keys(), self.counts[f].counts, min_count=min_count,
                missing_key=module.MISSING_KEYS[f], max_rows=self.max_rows)
            vocab_lib.save_vocabulary(self.out, name, vocab_keys)
            size = len(vocab_keys) + 1
            fields.append({"name": name, "kind": module.FIELD_KINDS[f], "vocab_size": size,
                           "offset": offset, "oov_id": offset,
                           "num_distinct_values": len(self.coders[f])})
            code_to_global.append(local_ids + offset)
            offset += size
        # int64 offsets: the sums are int64, the indices `take` wants (int32 ones it
        # would convert first, slower than the whole lookup).
        code_offsets = np.cumsum([0] + [len(c) for c in self.coders[:-1]]).astype(np.int64)
        lookup = np.concatenate(code_to_global).astype(np.int32)
        self.coders = self.counts = code_to_global = None
        xla_cpu.release_host_memory()
        for name in layout.SPLITS:
            layout.update_rows(layout.ids_path(self.out, name),
                            lambda codes: lookup.take(codes + code_offsets),
                            block_rows=_REMAP_ROWS, num_threads=PARSE_THREADS)
        return fields, self._split_entries()


class HashEncoder(Encoder):
    """The one pass of a hash-mode prepare: rows -> final global ids (mlctr.data.hashing).

    Args:
        out, with_true_prob, writers: as for `Encoder`.
        module: the raw format (or CsvFormat): FIELD_NAMES, FIELD_KINDS, MISSING_KEYS.
        buckets: int [F] buckets per field; field f owns buckets[f] + 1 ids (0: missing).
    """

    def __init__(self, out: str, module, with_true_prob: bool, writers: list,
                 buckets: list[int]):
        super().__init__(out, module.FIELD_NAMES, with_true_prob, writers)
        self.coders = self.counts = None  # no vocabulary: nothing to count
        self.buckets = list(buckets)
        self.missing_keys = list(module.MISSING_KEYS)
        self.offsets = hashing.field_offsets(self.buckets)

    def _codes(self, keys: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
        del train_rows
        return hashing.hash_ids(keys, self.buckets, self.missing_keys, self.offsets).T

    def finish(self, module, min_count: int) -> tuple[list[dict], dict]:
        """Closes the files; the ids are final already."""
        del min_count
        self._close()
        fields = hashing.feature_map_fields(self.field_names, module.FIELD_KINDS,
                                            self.buckets, self.offsets)
        return fields, self._split_entries()
