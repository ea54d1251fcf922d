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
numpy (a truncated file, a garbled header). So `PreparedDataset` checks
(mlctr.data.validation), before it hands out a batch: the feature map's keys and its own
checksum; every file's presence, .npy header, dtype, shape (against num_fields and each
split's num_examples) and byte size; each vocabulary's length against its field's
vocab_size; every id against its field's range [offset, offset + vocab_size) and every
label against {0, 1}, in one chunked, multi-threaded pass over the memory maps; and the
CRC-32 of the first, the last and a few random 16 MiB blocks of every file
(mlctr.data.layout). The id pass must read every id (an out-of-range id anywhere is a
silent error), so it is the cost of an open: a Criteo-sized split (45M rows x 39 ids, 7
GB) takes a few seconds from the page cache. A full checksum would read everything a
second time and cost as much again, so it is left to an explicit
`PreparedDataset.verify()`, the check for bit rot that keeps ids in range. """

from __future__ import annotations

import itertools
import math
from typing import Iterator

import numpy as np

from mlctr.data import layout
from mlctr.data import validation



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
        validation.validate(self.data_dir, self.feature_map, expected_dataset=expected_dataset)
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
        validation.check_checksums(self.data_dir, self.feature_map, sample=None)

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
        new dataset, with other ids: a silently wrong AUC)."""
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
