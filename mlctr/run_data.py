"""The dataset side of a run: where it lives, preparing it, opening it, feeding batches.

Preparing a dataset is a step of its own, done before training starts: `mlctr.main`
calls `ensure_prepared(config, workdir)` and then the trainer, which only opens what is
there (`open_dataset`). A library caller does the same two calls.
"""
from __future__ import annotations

import json
import os
import queue
import threading
from typing import Any, Callable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections

from mlctr.data import format as fmt
from mlctr.run_errors import RunError

# The dataset a run was trained on (process 0 writes it at the start of the run), so
# `mlctr.predict` can compare it with the dataset it is given.
DATASET_RECORD = "dataset.json"


def dataset_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the prepared dataset lives: config.data.data_dir or <workdir>/data."""
    return config.data.data_dir or os.path.join(workdir, "data")


def ensure_prepared(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Prepares the dataset of `config` unless it is already there; returns its directory.

    For `synthetic` the raw Criteo-format file is generated under the data dir;
    for `criteo`/`avazu` `config.data.raw` must name the Kaggle file. In a
    multi-process run process 0 prepares it and the others wait, so the data dir
    must be on storage every process sees (or prepared on every host beforehand).

    Raises:
      RunError: there is no dataset and nothing to prepare it from, or another
        process finds none after process 0 prepared it.
      mlctr.data.errors.DataError: the raw file is bad (one line naming file and row).
    """
    from mlctr.data.prepare import prepare

    data_dir = dataset_dir(config, workdir)
    feature_map = os.path.join(data_dir, fmt.FEATURE_MAP)
    if jax.process_index() == 0 and not os.path.exists(feature_map):
        raw = config.data.raw
        if config.data.dataset == "synthetic":
            raw = raw or os.path.join(data_dir, "raw", "synthetic_criteo.txt")
        elif not raw:
            raise RunError(f"no prepared dataset at {data_dir} (config.data.data_dir) and "
                           f"config.data.raw names no raw {config.data.dataset} file to "
                           "prepare it from")
        logging.info("Preparing %s dataset into %s", config.data.dataset, data_dir)
        prepare(
            config.data.dataset, raw, data_dir, protocol=config.data.protocol,
            skip_bad_rows=config.data.skip_bad_rows, seed=config.data.split_seed,
            num_rows=config.data.num_rows if config.data.dataset == "synthetic" else None,
            vocab_mode=config.vocab.mode, hash_buckets=config.vocab.hash_buckets,
            field_buckets=config.vocab.field_buckets or None, max_rows=config.vocab.max_rows)
    if jax.process_count() > 1:
        # Every process passes this barrier, whether or not it found the dataset.
        multihost_utils.sync_global_devices("mlctr: dataset ready")
    if not os.path.exists(feature_map):
        raise RunError(
            f"process {jax.process_index()} finds no prepared dataset at {data_dir} after "
            "process 0 prepared it: put config.data.data_dir on storage all hosts share, or "
            "prepare it on every host first (python -m mlctr.data.prepare ...)")
    return data_dir


def open_dataset(config: ml_collections.ConfigDict, workdir: str):
    """Opens the prepared dataset of a run (checked against `config.data.dataset`).

    Raises:
      RunError: there is no prepared dataset (run `ensure_prepared` first).
      mlctr.data.errors.DatasetError: the dataset is damaged or of another kind.
    """
    from mlctr.data.reader import PreparedDataset

    data_dir = dataset_dir(config, workdir)
    if not os.path.exists(os.path.join(data_dir, fmt.FEATURE_MAP)):
        raise RunError(f"no prepared dataset at {data_dir} (config.data.data_dir): prepare "
                       "it first (mlctr.train.ensure_prepared(config, workdir), or "
                       "python -m mlctr.data.prepare ...)")
    dataset = PreparedDataset(data_dir, expected_dataset=config.data.dataset)
    mode = dataset.feature_map.get("vocab", {}).get("mode", "fit")
    if mode != config.vocab.mode:
        raise RunError(f"{data_dir} holds a dataset prepared with vocab mode {mode!r}, but "
                       f"config.vocab.mode is {config.vocab.mode!r}: choose another "
                       "config.data.data_dir or prepare it again with --overwrite")
    return dataset


def dataset_fingerprint(dataset) -> dict:
    """What a checkpoint must agree with to resume on this dataset."""
    return {"vocab_size": dataset.vocab_size, "num_fields": dataset.num_fields,
            "train_examples": dataset.num_examples("train"),
            "source_sha256": dataset.feature_map.get("source", {}).get("sha256")}


def write_dataset_record(workdir: str, kind: str, fingerprint: dict) -> None:
    """<workdir>/dataset.json: the fingerprint and the dataset kind (process 0 only)."""
    if jax.process_index() == 0:
        path = os.path.join(workdir, DATASET_RECORD)
        with open(path + ".tmp", "w") as f:
            json.dump({**fingerprint, "dataset": kind}, f, indent=1)
        os.replace(path + ".tmp", path)


def prefetch(iterator: Iterator[dict], place: Callable[[dict], Any] = jax.device_put,
             size: int = 2) -> Iterator[dict]:
    """Reads and places batches in a background thread, overlapping the step.

    Args:
      iterator: host batches.
      place: turns a host batch into device arrays (e.g. `sharding.global_batch`).
      size: batches read ahead.
    """
    items: queue.Queue = queue.Queue(maxsize=size)
    sentinel = object()
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce():
        try:
            for batch in iterator:
                put(place(batch))
                if stop.is_set():
                    return
        except BaseException as e:  # surfaced in the consumer
            put(e)
        put(sentinel)

    threading.Thread(target=produce, daemon=True).start()
    try:
        while True:
            item = items.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer left early: let the reader thread end
