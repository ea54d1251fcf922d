"""Training batches straight from raw files with hashed ids: no prepare, no disk copy.

With hashed vocabularies (mlctr.data.hashing) an id is a pure function of the value, so
raw files can be trained from as they are read: parse a chunk, hash it, cut it into
batches. This is the way to make one pass over data too large to copy (the Criteo 1TB
logs are 682 GB prepared; MLPerf DLRM trains one epoch). The ids are exactly those of a
hash-mode `prepare` with the same bucket options (tested), so a model trained from a
stream is evaluated on a prepared valid/test split.

The order is the files' order (no shuffle; the logs are in time order, as an online
learner sees them). Each process reads its own files (`files[process_index::
process_count]`) and yields local batches of batch_size / process_count rows; the last
partial batch of a process is dropped. Processes may end a few batches apart: the
caller ends every process at the smallest count (`num_batches` tells it ahead, from
line counts).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

from mlctr.data import criteo_1tb, hashing, parsing
from mlctr.data.prepare.options import raw_format_module


class HashedStream:
    """Hashed-id batches of raw files in a raw format ("criteo", "avazu", "criteo_1tb").

    Args:
        raw_format: the files' raw format.
        files: the raw files (plain or gzip), in reading order.
        hash_buckets, field_buckets, max_rows: as for `prepare(vocab_mode="hash")`.
        skip_bad_rows: skip and count bad rows (`skipped`) instead of raising.
        chunk_bytes: bytes parsed at a time.

    Attributes:
        fields: the feature map's per-field entries (name, kind, vocab_size, offset,
            oov_id, hash_buckets), as a hash-mode prepare writes them.
        vocab_size: rows of the concatenated table.
        num_fields: F.
        skipped: bad rows skipped so far, by reason.
    """

    def __init__(self, raw_format: str, files: Sequence[str], *,
                 hash_buckets: int = hashing.DEFAULT_BUCKETS, field_buckets=None,
                 max_rows: int = 0, skip_bad_rows: bool = False,
                 chunk_bytes: int = parsing.DEFAULT_CHUNK_BYTES):
        self.module = raw_format_module(raw_format)
        self.files = [str(f) for f in files]
        if not self.files:
            raise ValueError("HashedStream needs at least one raw file")
        for path in self.files:
            parsing.RawFile(path).check_exists()
        self.buckets = hashing.field_bucket_counts(
            self.module.FIELD_NAMES, hash_buckets=hash_buckets, field_buckets=field_buckets,
            max_rows=max_rows)
        self.offsets = hashing.field_offsets(self.buckets)
        self.fields = hashing.feature_map_fields(self.module.FIELD_NAMES,
                                                 self.module.FIELD_KINDS, self.buckets,
                                                 self.offsets)
        self.vocab_size = int(self.offsets[-1]) + self.buckets[-1] + 1
        self.num_fields = len(self.fields)
        self.skip_bad_rows = skip_bad_rows
        self.chunk_bytes = chunk_bytes
        self.skipped: dict[str, int] = {}

    def process_files(self, process_index: int = 0, process_count: int = 1) -> list[str]:
        """The files process `process_index` of `process_count` reads."""
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} outside [0, {process_count})")
        if process_count > len(self.files):
            raise ValueError(f"process_count {process_count}: more processes than the "
                             f"{len(self.files)} files")
        return self.files[process_index::process_count]

    def batches(self, batch_size: int, *, process_index: int = 0,
                process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """This process's batches {"ids": int32 [B/P, F], "label": float32 [B/P]}.

        Args:
            batch_size: GLOBAL batch size B, a multiple of process_count.
            process_index, process_count: this process and how many share the files.
        """
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(f"global batch_size {batch_size} must be a positive multiple "
                             f"of process_count {process_count}")
        local = batch_size // process_count
        pending_ids, pending_labels, held = [], [], 0
        for ids, labels in self._rows(self.process_files(process_index, process_count)):
            pending_ids.append(ids)
            pending_labels.append(labels)
            held += len(labels)
            if held < local:
                continue
            ids, labels = np.concatenate(pending_ids), np.concatenate(pending_labels)
            cut = held - held % local
            for start in range(0, cut, local):
                yield {"ids": ids[start:start + local],
                       "label": labels[start:start + local].astype(np.float32)}
            pending_ids, pending_labels, held = [ids[cut:]], [labels[cut:]], held - cut

    def num_batches(self, batch_size: int, *, process_index: int = 0,
                    process_count: int = 1) -> int:
        """Batches `batches` yields if no row is bad (an upper bound), from line counts."""
        header = 1 if self.module.HEADER is not None else 0
        rows = sum(criteo_1tb.count_lines(path) - header
                   for path in self.process_files(process_index, process_count))
        return rows // (batch_size // process_count)

    def _rows(self, files: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int32 [n, F], labels uint8 [n]) chunk by chunk over `files`."""
        for path in files:
            raw_file = parsing.RawFile(path, chunk_bytes=self.chunk_bytes)
            parsed_chunks = parsing.ordered_map(
                lambda chunk, path=path: self.module.parse_chunk(path, chunk),
                raw_file.chunks(), 2)
            with contextlib.closing(parsed_chunks):
                for parsed in parsed_chunks:
                    if parsed.first_error is not None:
                        if not self.skip_bad_rows:
                            raise parsed.first_error
                        for reason, count in parsed.skipped.items():
                            self.skipped[reason] = self.skipped.get(reason, 0) + count
                    if len(parsed.labels):
                        yield (hashing.hash_ids(parsed.keys, self.buckets,
                                              self.module.MISSING_KEYS, self.offsets),
                               parsed.labels)

