"""Raw Criteo / Avazu / BARS-csv rows -> the ids an exported model takes, with numpy only.

    from mlctr.export.preprocess import Preprocessor
    pre = Preprocessor.load("exported/")                     # checks the manifest's sha256
    batch = pre.encode_lines(["0\t1\t5\t...", ...])          # or pre.encode_file("rows.txt")
    batch.ids      # int32 [n, fields], the model's input

It imports nothing of JAX, Flax or the training stack (a test checks): only numpy and
mlctr.data's parsing, vocabulary and hashing modules, which are numpy code. Those are
the modules `mlctr.data.prepare` and `mlctr.predict` encode rows with, so the ids are
theirs exactly: the same parser per raw format (bucketised Criteo integers, Avazu's hour,
weekday and weekend, a csv spec's columns), then the fitted vocabularies (values unseen in
training -> the field's OOV id) or the hashed buckets, plus each field's offset. The
vocabularies and feature map are the export directory's copies (`preprocess/`), laid
out as in a prepared dataset. Quotient-remainder embeddings need nothing here: the
exported model maps dataset ids to its table rows itself, as training does.

Rows without a header: Criteo rows have 40 columns (label first) or 39; an Avazu or csv
batch may start with the file's header line, else the columns are taken to be the
dataset's own order (Avazu's `id,click,hour,...`, or without `click`; a csv spec's label
then its fields, or its fields alone). Bad rows raise `DataError` naming the row (1-based
within the batch) and column, or are skipped and counted with `skip_bad_rows`.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
from typing import Sequence

import numpy as np

from mlctr.data import avazu, bars_csv, criteo, criteo_1tb, hashing, layout, parsing
from mlctr.data import vocab as vocab_lib
from mlctr.data.errors import DataError
from mlctr.export import manifest as manifest_lib

PREPROCESS_DIR = "preprocess"
# The raw formats of prepared datasets whose rows are not csv (as mlctr.data.prepare).
RAW_FORMATS = {"criteo": criteo, "avazu": avazu, "criteo_1tb": criteo_1tb}


@dataclasses.dataclass
class Encoded:
    """Encoded rows.

    Attributes:
      ids: int32 [n, fields] the model's input.
      labels: float32 [n] (NaN for unlabeled rows).
      rows: int64 [n] 1-based line of each kept row in the input (a header is line 1).
      skipped: bad rows skipped, by reason (empty unless skip_bad_rows).
    """

    ids: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    skipped: collections.Counter


def copy_dataset_files(data_dir: str, export_dir: str) -> None:
    """Copies what encoding needs from a prepared dataset: its feature map and, for fitted
    vocabularies, every field's vocabulary (the prepared ids/labels are not copied)."""
    feature_map = layout.read_feature_map(data_dir)
    out = os.path.join(export_dir, PREPROCESS_DIR)
    os.makedirs(out, exist_ok=True)
    layout.write_json_atomic(layout.feature_map_path(out), feature_map)
    if layout.is_hashed(feature_map):
        return
    for field in feature_map["fields"]:
        vocab_lib.save_vocabulary(out, field["name"],
                                  vocab_lib.load_vocabulary(data_dir, field["name"]))


class Preprocessor:
    """Encodes raw rows with the vocabularies (or hash buckets) of an export's dataset."""

    def __init__(self, directory: str):
        """`directory`: a prepared dataset, or an export's `preprocess/` (same layout)."""
        self.feature_map = layout.read_feature_map(directory)
        fields = self.feature_map["fields"]
        self.field_names = [f["name"] for f in fields]
        self._offsets = np.array([f["offset"] for f in fields], np.int64)
        raw_format = self.feature_map["raw_format"]
        if raw_format == "csv":
            self._csv = bars_csv.CsvFormat.from_spec(self.feature_map["csv"],
                                                     self.feature_map["dataset"])
            self._module, missing_keys = None, self._csv.MISSING_KEYS
        else:
            self._csv, self._module = None, RAW_FORMATS[raw_format]
            missing_keys = self._module.MISSING_KEYS
        self._missing_keys = list(missing_keys)
        if layout.is_hashed(self.feature_map):
            self._buckets = [f["hash_buckets"] for f in fields]
            self._vocabs = None
        else:
            self._vocabs = [vocab_lib.load_vocabulary(directory, name)
                            for name in self.field_names]

    @classmethod
    def load(cls, export_dir: str) -> "Preprocessor":
        """The preprocessor of an export directory, after verifying its manifest.

        Raises:
          manifest.ExportError: not an export, or a file differs from its sha256.
        """
        manifest_lib.verify(export_dir)
        return cls(os.path.join(export_dir, PREPROCESS_DIR))

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    def encode_keys(self, keys: np.ndarray) -> np.ndarray:
        """Per-field keys int64 [n, F] (as the raw-format parsers give) -> ids int32 [n, F]."""
        if self._vocabs is None:
            return hashing.hash_ids(keys, self._buckets, self._missing_keys, self._offsets)
        ids = np.empty(keys.shape, np.int32)
        for f, vocab_keys in enumerate(self._vocabs):
            ids[:, f] = vocab_lib.encode_keys(vocab_keys, keys[:, f])
        return ids + self._offsets.astype(np.int32)

    def encode_file(self, path: str, *, skip_bad_rows: bool = False,
                    chunk_bytes: int = parsing.DEFAULT_CHUNK_BYTES) -> Encoded:
        """Every row of a raw file (plain or gzip; the dataset's raw format, with the
        header an Avazu or csv file has): as `mlctr.predict` encodes it."""
        raw_file = parsing.RawFile(path, chunk_bytes=chunk_bytes)
        reader = self._csv.reader(path) if self._csv is not None else None
        parts, skipped = [], collections.Counter()
        labeled = None
        with contextlib.closing(raw_file.chunks()) as chunks:
            for chunk in chunks:
                if labeled is None and reader is None:
                    labeled = self._is_labeled(chunk.data[:chunk.data.index(b"\n") + 1])
                parts.append(self._parse(path, chunk, reader, labeled, skip_bad_rows, skipped))
        return self._collect(parts, skipped)

    def encode_lines(self, lines: Sequence[str | bytes], *, skip_bad_rows: bool = False,
                     source: str = "<rows>") -> Encoded:
        """Raw rows given as strings (one row each, newline optional); see the module
        doc for the header rule. `source` names them in error messages."""
        data = b"".join((line.encode("utf-8") if isinstance(line, str) else bytes(line))
                        .rstrip(b"\r\n") + b"\n" for line in lines)
        if not data:
            return self._collect([], collections.Counter())
        first_line = data[:data.index(b"\n")]
        header_line = self._header_line(first_line)
        if header_line is not None:
            data = header_line + b"\n" + data
        chunk = parsing.RawChunk(data, 1, data.count(b"\n"), False)
        reader = None
        if self._csv is not None:
            header = data[:data.index(b"\n")].decode("utf-8", errors="replace").split(",")
            reader = bars_csv.CsvReader(self._csv, source, header)
        labeled = None if reader is not None else self._is_labeled(data[:data.index(b"\n") + 1])
        skipped = collections.Counter()
        shift = 0 if header_line is None else 1  # lines as the caller numbers them
        try:
            ids, labels, rows = self._parse(source, chunk, reader, labeled, skip_bad_rows,
                                            skipped)
        except DataError as e:
            if not shift or e.line is None:
                raise
            raise DataError(e.path, e.detail, line=e.line - shift, column=e.column,
                            column_name=e.column_name, reason=e.reason) from None
        return self._collect([(ids, labels, rows - shift)], skipped)

    def _header_line(self, first_line: bytes) -> bytes | None:
        """The header to put before rows that have none (None: no header needed or given)."""
        if self._module is criteo or self._module is criteo_1tb:
            return None
        columns = first_line.decode("utf-8", errors="replace").split(",")
        if self._module is avazu:
            if first_line.startswith(b"id,"):
                return None
            return avazu.header(len(columns) == len(avazu.columns(True)))
        if set(self._csv.field_names) <= set(columns):
            return None
        names = list(self._csv.field_names)
        return ",".join(([self._csv.label] if len(columns) == len(names) + 1 else []) +
                        names).encode()

    def _is_labeled(self, first_line: bytes) -> bool:
        """As mlctr.data.prepare: Avazu from its header, Criteo from its column count."""
        if self._module is avazu:
            return avazu.is_labeled(first_line) or not first_line.startswith(b"id,hour,")
        num_columns = first_line.count(self._module.DELIMITER) + 1
        return num_columns != len(self._module.columns(False))

    def _parse(self, path, chunk, reader, labeled, skip_bad_rows, skipped) -> tuple:
        if reader is not None:
            labeled = reader.labeled
            parsed = reader.parse_chunk(path, chunk)
        else:
            parsed = self._module.parse_chunk(path, chunk, labeled=labeled)
        if parsed.first_error is not None and not skip_bad_rows:
            raise parsed.first_error
        skipped.update(parsed.skipped)
        labels = parsed.labels.astype(np.float32)
        if not labeled:
            labels = np.full(len(labels), np.nan, np.float32)
        return self.encode_keys(parsed.keys), labels, parsed.line_numbers.astype(np.int64)

    def _collect(self, parts: list, skipped: collections.Counter) -> Encoded:
        if not parts:
            return Encoded(np.zeros((0, self.num_fields), np.int32), np.zeros(0, np.float32),
                           np.zeros(0, np.int64), skipped)
        ids, labels, rows = (np.concatenate(column) for column in zip(*parts))
        return Encoded(ids.reshape(-1, self.num_fields).astype(np.int32), labels, rows, skipped)
