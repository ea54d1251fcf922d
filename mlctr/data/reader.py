"""Batches from a prepared dataset: seeded shuffled training batches, padded eval batches.

The split files are memory-mapped int32 [n, F] id matrices (see mlctr.data.layout), so
a batch is one vectorised gather and nothing is loaded before it is needed.

Training order. Epoch e visits the train rows in the order of a seeded permutation of
all row indices, `np.random.default_rng([seed, e]).permutation(n)`: a true uniform
shuffle, a pure function of (seed, epoch), that any process can recompute and slice
at any batch (so resuming at `start_batch` reads nothing that is skipped). The
trade-off against shuffling blocks of rows: 8 bytes of index per train row in memory
(290 MB for the full Criteo train split) and random reads, which is fast once the
split (5.7 GB for Criteo) sits in the page cache and the indices of each batch are
sorted before the gather; block shuffling would read sequentially but correlate the
rows of a batch. Global batch b holds permutation[b*B:(b+1)*B]; process p of P takes
the p-th of its P equal slices, so the processes together cover each global batch
exactly once; the last partial batch of an epoch is dropped.

Per-process train rows (`ProcessShard`). Where each process has prepared its own train
rows (the Criteo 1TB days of `mlctr.data.criteo_1tb.train_days`), process p draws its
B / P rows of every global batch from its own rows, in the order of its own seeded
permutation (`process_seed(seed, p)` in place of the seed), and every process stops at
the same number of batches per epoch: the smallest over processes, so the larger shards
leave some rows out of each epoch (different ones each epoch, as the order changes).

Evaluation order is the file order; global batch b holds rows [b*B, (b+1)*B), process
p takes its p-th slice, and rows past the end are padding (ids 0, label 0, mask 0), so
every example counts exactly once and every process yields the same number of batches.

Validation on open. A dataset that disagrees with its feature_map.json would train
without an error and give wrong numbers (an edited vocab_size, ids past a field's
vocabulary, a label 7, an Avazu directory under `dataset=criteo`), or fail deep inside
numpy (a truncated file, a garbled header). So `PreparedDataset` checks, before it hands
out a batch: the feature map's keys and its own checksum; every file's presence, .npy
header, dtype, shape (against num_fields and each split's num_examples) and byte size;
each vocabulary's length against its field's vocab_size; every id against its field's
range [offset, offset + vocab_size) and every label against {0, 1}, in one chunked,
multi-threaded pass over the memory maps; and the CRC-32 of the first, the last and a
few random 16 MiB blocks of every file (mlctr.data.layout). The id pass must read every
id (an out-of-range id anywhere is a silent error), so it is the cost of an open: a
Criteo-sized split (45M rows x 39 ids, 7 GB) takes a few seconds from the page cache. A
full checksum would read everything a second time and cost as much again, so it is left
to an explicit `PreparedDataset.verify()`, the check for bit rot that keeps ids in range.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import os
import tokenize
import random
from typing import Iterator

import numpy as np

from mlctr.data import layout
from mlctr.data.errors import DatasetError

SAMPLED_BLOCKS = 4  # checksummed blocks per file on open, besides the first and last
_SCAN_ROWS = 1 << 17
_SCAN_THREADS = max(1, min(4, os.cpu_count() or 1))


class PreparedDataset:
    """A prepared dataset directory (see mlctr.data.layout).

    Args:
        data_dir: the directory written by `mlctr.data.prepare.prepare`.
        expected_dataset: the dataset kind the caller means ("criteo", "avazu",
            "synthetic", ...); a directory holding another kind is an error. None
            accepts any.

    Raises:
        DatasetError: the directory is not a complete, consistent prepared dataset (one
            line naming the file and, where it is about one, the field).

    Attributes:
        feature_map: the parsed feature_map.json.
        vocab_size: rows of the concatenated embedding table (ids lie in [0, vocab_size)).
        num_fields: F, ids per example.
        field_names: the F field names, in column order.
    """

    def __init__(self, data_dir: str, expected_dataset: str | None = None):
        self.data_dir = str(data_dir)
        self.feature_map = layout.read_feature_map(self.data_dir)
        validate(self.data_dir, self.feature_map, expected_dataset=expected_dataset)
        self.vocab_size = int(self.feature_map["vocab_size"])
        self.num_fields = int(self.feature_map["num_fields"])
        self.field_names = [f["name"] for f in self.feature_map["fields"]]
        self._ids = {}
        self._labels = {}
        self._true_prob = {}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.num_examples(s)}" for s in layout.SPLITS)
        return (f"PreparedDataset({self.data_dir!r}, {self.feature_map['dataset']}, "
                f"{self.num_fields} fields, vocab_size={self.vocab_size}, {sizes})")

    def verify(self) -> None:
        """Checks the CRC-32 of every block of every file (opening checks a sample).

        Raises:
            DatasetError: a file's content differs from what prepare wrote.
        """
        _check_checksums(self.data_dir, self.feature_map, sample=None)

    def _check_split(self, split: str) -> None:
        if split not in layout.SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {layout.SPLITS}")

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Memory-mapped (ids int32 [n, F], labels uint8 [n]) of a split."""
        self._check_split(split)
        if split not in self._ids:
            self._ids[split] = layout.open_rows(layout.ids_path(self.data_dir, split))
            self._labels[split] = layout.open_rows(layout.label_path(self.data_dir, split))
        return self._ids[split], self._labels[split]

    def hold(self) -> None:
        """Opens every split now, so the run reads the files it started with to the end:
        a `prepare --overwrite` into the same directory swaps in new files, but open
        memory maps keep the old ones (opened lazily, the test split was read from the
        new dataset, with other ids: a silently wrong AUC, issue 26)."""
        for split in layout.SPLITS:
            self.arrays(split)
            self.true_prob(split)

    def num_examples(self, split: str) -> int:
        """Number of examples in `split` ("train", "valid" or "test")."""
        self._check_split(split)
        return int(self.feature_map["splits"][split]["num_examples"])

    def num_train_batches(self, batch_size: int) -> int:
        """Global training batches per epoch (the last partial batch is dropped)."""
        return self.num_examples("train") // int(batch_size)

    def num_eval_batches(self, split: str, batch_size: int) -> int:
        """Global evaluation batches of `split` (the last one padded)."""
        return math.ceil(self.num_examples(split) / int(batch_size))

    def train_order(self, *, seed: int, epoch: int) -> np.ndarray:
        """The order (row indices) in which epoch `epoch` visits the train rows."""
        return np.random.default_rng([int(seed), int(epoch)]).permutation(
            self.num_examples("train"))

    def train_batches(self, batch_size: int, *, seed: int, epoch: int,
                      process_index: int = 0, process_count: int = 1,
                      start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Shuffled training batches of one epoch (this process's slices).

        Args:
            batch_size: GLOBAL batch size B; must be divisible by process_count.
            seed: shuffling seed.
            epoch: epoch number (each epoch has its own order).
            process_index: this process, 0 <= process_index < process_count.
            process_count: number of processes sharing each global batch.
            start_batch: first global batch to yield (resume mid-epoch).

        Yields:
            {"ids": int32 [B // P, F], "label": float32 [B // P]} for global batches
            start_batch .. num_train_batches(B) - 1.
        """
        local = _local_batch_size(batch_size, process_index, process_count)
        num_batches = self.num_train_batches(batch_size)
        if not 0 <= start_batch <= num_batches:
            raise ValueError(f"start_batch {start_batch} outside [0, {num_batches}]")
        if start_batch == num_batches:
            return
        ids, labels = self.arrays("train")
        order = self.train_order(seed=seed, epoch=epoch)
        for b in range(start_batch, num_batches):
            begin = b * batch_size + process_index * local
            # Sorted rows read the memory map front to back; np.take is several times
            # faster than fancy indexing for row gathers.
            rows = np.sort(order[begin:begin + local])
            yield {"ids": np.take(ids, rows, axis=0),
                   "label": np.take(labels, rows).astype(np.float32)}

    def eval_batches(self, split: str, batch_size: int, *, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Sequential evaluation batches, the last one padded and masked.

        Args:
            split: "train", "valid" or "test".
            batch_size: GLOBAL batch size B; must be divisible by process_count.
            process_index: this process.
            process_count: number of processes sharing each global batch.

        Yields:
            {"ids": int32 [B // P, F], "label": float32 [B // P], "mask": float32
            [B // P]}; every process yields num_eval_batches(split, B) batches, and
            across processes each example has mask 1 exactly once.
        """
        local = _local_batch_size(batch_size, process_index, process_count)
        ids, labels = self.arrays(split)
        n = len(labels)
        for b in range(self.num_eval_batches(split, batch_size)):
            begin = min(b * batch_size + process_index * local, n)
            end = min(begin + local, n)
            count = end - begin
            batch_ids = np.zeros((local, self.num_fields), np.int32)
            batch_labels = np.zeros(local, np.float32)
            mask = np.zeros(local, np.float32)
            batch_ids[:count] = ids[begin:end]
            batch_labels[:count] = labels[begin:end]
            mask[:count] = 1.0
            yield {"ids": batch_ids, "label": batch_labels, "mask": mask}

    def labels(self, split: str) -> np.ndarray:
        """float32 [n]: the labels of `split` in evaluation order."""
        return self.arrays(split)[1].astype(np.float32)

    def true_prob(self, split: str) -> np.ndarray | None:
        """float32 [n]: each row's true click probability in evaluation order (synthetic
        data), or None when unknown."""
        self._check_split(split)
        path = layout.true_prob_path(self.data_dir, split)
        if "bayes" not in self.feature_map:
            return None
        if split not in self._true_prob:  # read once: the file the run started with
            self._true_prob[split] = np.load(path, allow_pickle=False)
        return self._true_prob[split]

    @property
    def bayes(self) -> dict | None:
        """Bayes-optimal {"split": {"auc", "logloss"}} (synthetic data), else None."""
        return self.feature_map.get("bayes")


def process_seed(seed: int, process_index: int) -> int:
    """The shuffling seed of process `process_index`'s own train rows in a run of `seed`."""
    return int(np.random.SeedSequence([int(seed), int(process_index)]).generate_state(1)[0])


class ProcessShard:
    """One process's own prepared train rows, trained from as part of a global batch.

    Everything but training is the wrapped dataset's (its valid and test splits, which
    every process holds whole, feature map, vocabulary size): attributes not defined
    here are looked up on it.

    Args:
        dataset: this process's prepared dataset (its own train rows).
        process_index: this process.
        process_train_rows: the train rows of every process, in process order (so every
            process computes the same batches per epoch).
        process_sources: every process's `source.sha256` (what its rows were read from),
            in process order.

    Attributes:
        process_count: the number of processes.
    """

    def __init__(self, dataset: PreparedDataset, process_index: int,
                 process_train_rows, process_sources):
        self.dataset = dataset
        self.process_index = int(process_index)
        self.process_train_rows = [int(n) for n in process_train_rows]
        self.process_sources = list(process_sources)
        self.process_count = len(self.process_train_rows)
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {process_index} outside [0, {self.process_count})")
        if self.process_train_rows[self.process_index] != dataset.num_examples("train"):
            raise ValueError(f"process {process_index} has {dataset.num_examples('train')} "
                             f"train rows, not {self.process_train_rows[self.process_index]}")

    def __getattr__(self, name):
        if name == "dataset":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return (f"ProcessShard({self.dataset!r}, process {self.process_index} of "
                f"{self.process_count})")

    def local_batch_size(self, batch_size: int) -> int:
        """Rows of a global batch of `batch_size` that each process reads."""
        return _local_batch_size(batch_size, self.process_index, self.process_count)

    def num_train_batches(self, batch_size: int) -> int:
        """Global training batches per epoch: the fewest any process's rows fill."""
        return min(self.process_train_rows) // self.local_batch_size(batch_size)

    def rows_left_out(self, batch_size: int) -> list[int]:
        """Train rows per epoch that each process does not visit (in process order)."""
        used = self.num_train_batches(batch_size) * self.local_batch_size(batch_size)
        return [n - used for n in self.process_train_rows]

    def train_batches(self, batch_size: int, *, seed: int, epoch: int,
                      process_index: int = 0, process_count: int = 1,
                      start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """This process's part of the global batches of one epoch, from its own rows.

        Args:
            batch_size: GLOBAL batch size B, a multiple of the process count.
            seed: the run's shuffling seed (each process shuffles with `process_seed`).
            epoch: epoch number (each epoch has its own order).
            process_index: this process's slice of each global batch (any slice: the
                rows are its own either way).
            process_count: slices per global batch: one per process.
            start_batch: first global batch to yield (resume mid-epoch).

        Yields:
            {"ids": int32 [B // P, F], "label": float32 [B // P]} for global batches
            start_batch .. num_train_batches(B) - 1.
        """
        if process_count != self.process_count:
            raise ValueError(f"{self.process_count} processes train from their own rows, "
                             f"so each needs its own slice of the batch, not one of "
                             f"{process_count}")
        del process_index
        num_batches = self.num_train_batches(batch_size)
        if not 0 <= start_batch <= num_batches:
            raise ValueError(f"start_batch {start_batch} outside [0, {num_batches}]")
        batches = self.dataset.train_batches(
            self.local_batch_size(batch_size), seed=process_seed(seed, self.process_index),
            epoch=epoch, start_batch=start_batch)
        return itertools.islice(batches, num_batches - start_batch)


def open_dataset(data_dir: str, expected_dataset: str | None = None) -> PreparedDataset:
    """Opens a prepared dataset directory (see PreparedDataset)."""
    return PreparedDataset(data_dir, expected_dataset)


def _local_batch_size(batch_size: int, process_index: int, process_count: int) -> int:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} must be a positive multiple of "
                         f"process_count {process_count}")
    return batch_size // process_count


# ---------------------------------------------------------------------------
# Validation (see the module docstring).


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
    _check_checksums(data_dir, feature_map, sample=SAMPLED_BLOCKS)


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


def _check_checksums(data_dir: str, feature_map: dict, sample: int | None) -> None:
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
