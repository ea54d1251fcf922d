"""Encoding new raw files with a prepared dataset's vocabularies (`encode_raw`), for
prediction: the same parsing and ids as the prepare, labeled or not."""
from __future__ import annotations

import collections
import contextlib

import numpy as np

from mlctr.data import avazu, bars_csv, hashing, layout, parsing
from mlctr.data import vocab as vocab_lib
from mlctr.data.prepare.options import CSV_DATASETS, raw_format_module


def encode_raw(data_dir: str, raw_path: str, *, dataset: str | None = None,
               skip_bad_rows: bool = False, chunk_bytes: int = parsing.DEFAULT_CHUNK_BYTES,
               with_line_numbers: bool = False) -> tuple:
    """Encodes a raw file with a prepared dataset's vocabularies (for prediction).

    Unlabeled files (Kaggle's Criteo test.txt: 39 columns; Avazu test.csv: no `click`
    column in the header) are recognised and get NaN labels.

    Args:
        data_dir: a prepared dataset directory.
        raw_path: a raw file in that dataset's raw format (plain or gzip).
        dataset: "criteo" or "avazu" to override the raw format in the feature map.
            Csv datasets read the file's header (a label column is optional).
        skip_bad_rows: skip bad rows instead of raising.
        chunk_bytes: bytes parsed at a time.
        with_line_numbers: also return where each kept row came from, and the skips.

    Returns:
        (ids int32 [n, F] global ids, labels float32 [n]) in file order; with
        `with_line_numbers` also line_numbers int64 [n] (the 1-based file line of each
        kept row) and a Counter of the skipped rows by reason.

    Raises:
        DataError: bad input.
    """
    feature_map = layout.read_feature_map(data_dir)
    raw_format = feature_map["raw_format"] if dataset in (None, "synthetic") else dataset
    csv_reader = None
    if raw_format == "csv" or dataset in CSV_DATASETS:
        csv_format = bars_csv.CsvFormat.from_spec(feature_map["csv"], feature_map["dataset"])
        csv_reader = csv_format.reader(raw_path)
    else:
        module = csv_format = raw_format_module(raw_format)
    encode = _id_encoder(data_dir, feature_map, csv_format.MISSING_KEYS)
    raw_file = parsing.RawFile(raw_path, chunk_bytes=chunk_bytes)
    labeled = None
    all_ids, all_labels, all_lines = [], [], []
    skipped: collections.Counter = collections.Counter()
    with contextlib.closing(raw_file.chunks()) as chunks:
        for chunk in chunks:
            if csv_reader is not None:
                labeled = csv_reader.labeled
                parsed = csv_reader.parse_chunk(raw_path, chunk)
            else:
                if labeled is None:
                    labeled = _is_labeled(module, chunk)
                parsed = module.parse_chunk(raw_path, chunk, labeled=labeled)
            if parsed.first_error is not None and not skip_bad_rows:
                raise parsed.first_error
            skipped.update(parsed.skipped)
            all_lines.append(parsed.line_numbers)
            all_ids.append(encode(parsed.keys))
            labels = parsed.labels.astype(np.float32)
            all_labels.append(labels if labeled else np.full(len(labels), np.nan, np.float32))
    result = (np.concatenate(all_ids).reshape(-1, feature_map["num_fields"]),
              np.concatenate(all_labels))
    if with_line_numbers:
        result += (np.concatenate(all_lines).astype(np.int64), skipped)
    return result


def _id_encoder(data_dir: str, feature_map: dict, missing_keys: list):
    """keys int64 [n, F] -> global ids int32 [n, F] under a dataset's vocabularies."""
    fields = feature_map["fields"]
    offsets = np.array([f["offset"] for f in fields], np.int32)
    if layout.is_hashed(feature_map):
        buckets = [f["hash_buckets"] for f in fields]
        return lambda keys: hashing.hash_ids(keys, buckets, missing_keys,
                                             offsets.astype(np.int64))
    vocabs = [vocab_lib.load_vocabulary(data_dir, f["name"]) for f in fields]

    def encode(keys):
        ids = np.empty(keys.shape, np.int32)
        for f, vocab_keys in enumerate(vocabs):
            ids[:, f] = vocab_lib.encode_keys(vocab_keys, keys[:, f])
        return ids + offsets
    return encode


def _is_labeled(module, chunk: parsing.RawChunk) -> bool:
    """Whether a raw file has a label column, from its first chunk."""
    first_line = chunk.data[:chunk.data.index(b"\n") + 1]
    if module is avazu:
        return avazu.is_labeled(first_line) or not first_line.startswith(b"id,hour,")
    num_columns = first_line.count(module.DELIMITER) + 1
    return num_columns != len(module.columns(False))
