"""Validation of a prepared dataset when it opens (`validate`): the feature map's
entries, the files' shapes and dtypes, every id within its field's range, the labels, and
the block checksums (sampled on open, all with `PreparedDataset.verify`). Bad data is a
DatasetError naming the file and what is wrong."""
from __future__ import annotations

import concurrent.futures
import os
import random
import tokenize

import numpy as np

from mlctr.data import layout
from mlctr.data.errors import DatasetError

SAMPLED_BLOCKS = 4  # checksummed blocks per file on open, besides the first and last
_SCAN_ROWS = 1 << 17
_SCAN_THREADS = max(1, min(4, os.cpu_count() or 1))


def validate(data_dir: str, feature_map: dict, *, expected_dataset: str | None = None) -> None:
    """Checks a prepared dataset against its feature map (see the module docstring).

    Raises:
        DatasetError: one line naming the file (and the field) at fault.
    """
    _check_feature_map(data_dir, feature_map, expected_dataset)
    _check_vocabularies(data_dir, feature_map)
    _check_offsets(data_dir, feature_map)
    for split in layout.SPLITS:
        _check_split_files(data_dir, feature_map, split)
    recorded = feature_map.get("checksums", {}).get("feature_map")
    if recorded is not None and recorded != layout.feature_map_checksum(feature_map):
        raise DatasetError(layout.feature_map_path(data_dir), "edited after prepare: its "
                           "checksum does not match its contents; prepare the dataset again",
                           reason="checksum")
    for split in layout.SPLITS:
        _scan_split(data_dir, feature_map, split)
    check_checksums(data_dir, feature_map, sample=SAMPLED_BLOCKS)


def _entry(feature_map: dict, path: str, key: str, kind=int):
    """feature_map[k1][k2]... for key "k1.k2...", checked to be a `kind` (>= 0 for int)."""
    value = feature_map
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DatasetError(path, f"missing key {key!r}; prepare the dataset again",
                               reason="bad_feature_map")
        value = value[part]
    if (not isinstance(value, kind) or isinstance(value, bool)
            or (kind is int and value < 0)):
        raise DatasetError(path, f"{key} is {value!r}, expected a "
                           f"{'non-negative integer' if kind is int else kind.__name__}",
                           reason="bad_feature_map")
    return value


def _check_feature_map(data_dir: str, feature_map: dict, expected_dataset: str | None) -> None:
    """The keys a dataset needs, of the right types, and the dataset kind."""
    path = layout.feature_map_path(data_dir)
    dataset = _entry(feature_map, path, "dataset", str)
    if expected_dataset is not None and dataset != expected_dataset:
        raise DatasetError(path, f"holds a {dataset!r} dataset, not {expected_dataset!r}: "
                           "check the data directory and the dataset name",
                           reason="wrong_dataset")
    num_fields = _entry(feature_map, path, "num_fields")
    fields = _entry(feature_map, path, "fields", list)
    _entry(feature_map, path, "vocab_size")
    for split in layout.SPLITS:
        _entry(feature_map, path, f"splits.{split}.num_examples")
    if len(fields) != num_fields:
        raise DatasetError(path, f"num_fields is {num_fields} but {len(fields)} fields are "
                           "listed", reason="bad_feature_map")
    for f, field in enumerate(fields):
        if not isinstance(field, dict):
            raise DatasetError(path, f"fields[{f}] is not an object", reason="bad_feature_map")
        for key in ("vocab_size", "offset"):
            _entry(field, path, key)
        _entry(field, path, "name", str)


def _check_offsets(data_dir: str, feature_map: dict) -> None:
    """Consecutive field offsets adding up to vocab_size."""
    path = layout.feature_map_path(data_dir)
    offset = 0
    for field in feature_map["fields"]:
        if field["offset"] != offset:
            raise DatasetError(path, f"offset {field['offset']}, but the previous fields' "
                               f"vocab_sizes put it at {offset}", field=field["name"],
                               reason="bad_feature_map")
        offset += field["vocab_size"]
    if feature_map["vocab_size"] != offset:
        raise DatasetError(path, f"vocab_size is {feature_map['vocab_size']} but the fields' "
                           f"vocab_sizes add up to {offset}", reason="bad_feature_map")


def _npy_layout(path: str, what: str):
    """(dtype, shape, data offset) of a .npy file, or a DatasetError saying what is wrong."""
    if not os.path.isfile(path):
        raise DatasetError(path, f"missing ({what}); prepare the dataset again",
                           reason="missing_file")
    try:
        return layout.npy_layout(path)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as e:
        # numpy parses the header as a Python literal: a garbled one can fail in tokenize.
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(path, f"not a readable .npy file ({detail}); prepare the dataset "
                           "again", reason="bad_npy") from None


def _check_npy(path: str, what: str, dtype, shape: tuple[int, ...], source: str) -> None:
    """Checks a .npy file's dtype, shape (as `source` in feature_map.json says) and size."""
    found_dtype, found_shape, offset = _npy_layout(path, what)
    if found_dtype != np.dtype(dtype):
        raise DatasetError(path, f"dtype {found_dtype}, expected {np.dtype(dtype)} ({what})",
                           reason="bad_dtype")
    if tuple(found_shape) != tuple(shape):
        raise DatasetError(path, f"shape {tuple(found_shape)}, but {source} in "
                           f"feature_map.json gives {tuple(shape)}", reason="bad_shape")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * found_dtype.itemsize
    size = os.path.getsize(path)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise DatasetError(path, f"{state}: {size} bytes, {expected} expected for shape "
                           f"{tuple(shape)}; prepare the dataset again", reason="bad_size")


def _check_vocabularies(data_dir: str, feature_map: dict) -> None:
    if layout.is_hashed(feature_map):  # no vocabulary files: ids are bucket numbers
        return
    for field in feature_map["fields"]:
        path = os.path.join(data_dir, "vocab", f"{field['name']}.npy")
        dtype, shape, _ = _npy_layout(path, f"the vocabulary of field {field['name']}")
        if len(shape) != 1 or shape[0] + 1 != field["vocab_size"]:
            raise DatasetError(
                layout.feature_map_path(data_dir), f"vocab_size is {field['vocab_size']} but "
                f"{path} holds {shape[0] if len(shape) == 1 else shape} keys (vocab_size = keys "
                "+ 1 for OOV)", field=field["name"], reason="vocab_size")
        _check_npy(path, f"the vocabulary of field {field['name']}", np.int64, shape,
                   f"fields[{field['name']}].vocab_size")


def _check_split_files(data_dir: str, feature_map: dict, split: str) -> None:
    n = feature_map["splits"][split]["num_examples"]
    source = f"splits.{split}.num_examples"
    _check_npy(layout.ids_path(data_dir, split), f"the {split} ids", np.int32,
               (n, feature_map["num_fields"]), f"{source} and num_fields")
    _check_npy(layout.label_path(data_dir, split), f"the {split} labels", np.uint8, (n,), source)
    if "true_prob" in feature_map.get("files", {}).get(split, {}):
        _check_npy(layout.true_prob_path(data_dir, split), f"the {split} true probabilities",
                   np.float32, (n,), source)


def _chunk_extremes(ids: np.ndarray, labels: np.ndarray, start: int):
    stop = min(start + _SCAN_ROWS, len(labels))
    block = ids[start:stop]
    return block.min(axis=0), block.max(axis=0), int(labels[start:stop].max())


def _scan_split(data_dir: str, feature_map: dict, split: str) -> None:
    """Every id within its field's range and every label 0 or 1 (chunked, threaded)."""
    n = feature_map["splits"][split]["num_examples"]
    if n == 0:
        return
    ids = layout.open_rows(layout.ids_path(data_dir, split))
    labels = layout.open_rows(layout.label_path(data_dir, split))
    low = np.array([f["offset"] for f in feature_map["fields"]], np.int64)
    high = low + [f["vocab_size"] for f in feature_map["fields"]]
    with concurrent.futures.ThreadPoolExecutor(_SCAN_THREADS) as pool:
        extremes = pool.map(lambda start: (start, _chunk_extremes(ids, labels, start)),
                            range(0, n, _SCAN_ROWS))
        for start, (smallest, largest, top_label) in extremes:
            if (smallest < low).any() or (largest >= high).any():
                _report_id(data_dir, feature_map, split, ids, start, low, high)
            if top_label > 1:
                rows = np.flatnonzero(labels[start:start + _SCAN_ROWS] > 1)
                raise DatasetError(layout.label_path(data_dir, split),
                                   f"row {start + rows[0]}: label "
                                   f"{labels[start + rows[0]]}, expected 0 or 1",
                                   reason="bad_label")


def _report_id(data_dir, feature_map, split, ids, start, low, high) -> None:
    block = np.asarray(ids[start:start + _SCAN_ROWS], np.int64)
    bad = (block < low) | (block >= high)
    row, f = (int(i) for i in np.argwhere(bad)[0])
    field = feature_map["fields"][f]
    raise DatasetError(layout.ids_path(data_dir, split),
                       f"row {start + row}: id {block[row, f]} outside the field's range "
                       f"[{low[f]}, {high[f]}) in feature_map.json", field=field["name"],
                       reason="id_out_of_range")


def check_checksums(data_dir: str, feature_map: dict, sample: int | None) -> None:
    """Compares file sizes and block CRC-32s with the feature map's `checksums`.

    Args:
        sample: check the first, the last and `sample` random blocks of each file;
            None checks every block.
    """
    checksums = feature_map.get("checksums")
    if checksums is None:  # format_version 1: no checksums written
        return
    block_bytes = checksums["block_bytes"]
    for name, recorded in checksums["files"].items():
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            raise DatasetError(path, "missing; prepare the dataset again", reason="missing_file")
        if os.path.getsize(path) != recorded["bytes"]:
            raise DatasetError(path, f"{os.path.getsize(path)} bytes, prepare wrote "
                               f"{recorded['bytes']}; prepare the dataset again",
                               reason="checksum")
        count = len(recorded["crc32"])
        blocks = range(count)
        if sample is not None and count > sample + 2:
            blocks = sorted({0, count - 1} | set(random.sample(range(1, count - 1), sample)))
        for block, crc in layout.block_checksums(path, block_bytes, blocks).items():
            if crc != recorded["crc32"][block]:
                raise DatasetError(path, f"content changed after prepare: CRC-32 of bytes "
                                   f"{block * block_bytes}..{(block + 1) * block_bytes} is "
                                   f"{crc}, prepare recorded {recorded['crc32'][block]}; "
                                   "the file is damaged, prepare the dataset again",
                                   reason="checksum")
