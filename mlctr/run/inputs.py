"""The dataset side of a run: where it lives, preparing it, opening it, feeding batches.

Preparing a dataset is a step of its own, done before training starts: `mlctr.main`
calls `ensure_prepared(config, workdir)` and then the trainer, which only opens what is
there (`open_run_dataset`). A library caller does the same two calls.

Per-process datasets. The Criteo 1TB logs with hashed ids (`PER_PROCESS_DATASETS`,
`vocab.mode='hash'`) are prepared by every process for itself: process i of P prepares
its own train days (mlctr.data.criteo_1tb.train_days) and its own copy of day 23 (valid
and test) into <data_dir>/process_<i>_of_<P>, and trains from its own rows
(`reader.ProcessShard`). A hashed id needs nothing from another process, so no process
waits for another's rows and the data dir may be on each host's local disk. Every
process copying day 23 costs each a read of one day, but keeps evaluation local: no
shared storage, no second dataset layout; the copies are checked to be identical at
open. The processes agree, in one collective, on every process's train rows (steps per
epoch: the smallest shard's) and on their copies of valid and test being the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Callable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from mlctr import atomic
from mlctr import sharding
from mlctr.data import hashing
from mlctr.data import layout
from mlctr.data.parsing.stream import background
from mlctr.data.errors import DataError
from mlctr.data.prepare import prepare
from mlctr.data.reader import PreparedDataset, ProcessShard
from mlctr.locking import LockedError
from mlctr.run.errors import RunError

# The dataset a run was trained on (process 0 writes it at the start of the run), so
# `mlctr.predict` can compare it with the dataset it is given.
DATASET_RECORD = "dataset.json"
# Datasets whose raw input is per-process files: in hash mode each process prepares
# and trains from its own (see the module docstring).
PER_PROCESS_DATASETS = ("criteo_1tb",)
_PROCESS_DIR = re.compile(r"process_(\d+)_of_(\d+)$")


def dataset_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the prepared dataset lives: config.data.data_dir or <workdir>/data."""
    return config.data.data_dir or os.path.join(workdir, "data")


def is_per_process(config: ml_collections.ConfigDict) -> bool:
    """Whether each process prepares and trains from its own rows (module docstring)."""
    return config.data.dataset in PER_PROCESS_DATASETS and config.vocab.mode == "hash"


def process_dir(data_dir: str, process_index: int, process_count: int) -> str:
    """<data_dir>/process_<i>_of_<P>: the prepared rows of process i of P."""
    return os.path.join(data_dir, f"process_{process_index}_of_{process_count}")


def process_counts(data_dir: str) -> list[int]:
    """The process counts P of the `process_<i>_of_<P>` directories in `data_dir`."""
    names = os.listdir(data_dir) if os.path.isdir(data_dir) else []
    return sorted({int(m.group(2)) for m in map(_PROCESS_DIR.match, names) if m})


def check_process_count(data_dir: str, process_count: int) -> None:
    """RunError when `data_dir` holds per-process datasets of another process count.

    The train days are dealt out by process count, so shards of two counts would
    share or miss days: never mixed, never silently replaced.
    """
    counts = [c for c in process_counts(data_dir) if c != process_count]
    if counts:
        raise RunError(
            f"{data_dir} holds a dataset prepared for {counts[0]} processes "
            f"(process_*_of_{counts[0]}/), but this run has {process_count}: the train days "
            f"are dealt out by process count, so run with {counts[0]} processes, or use "
            "another config.data.data_dir (or remove those directories to prepare again)")


def ensure_prepared(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Prepares the dataset of `config` unless it is already there; returns its directory.

    For `synthetic` the raw Criteo-format file is generated under the data dir;
    for `criteo`/`avazu` `config.data.raw` must name the Kaggle file. In a
    multi-process run process 0 prepares it and the others wait, so the data dir
    must be on storage every process sees (or prepared on every host beforehand).
    A per-process dataset (`is_per_process`) is prepared by every process into its
    own `process_dir`, which is returned.

    Raises:
      RunError: there is no dataset and nothing to prepare it from, or another
        process finds none after process 0 prepared it.
      mlctr.data.errors.DataError: the raw file is bad (one line naming file and row).
    """
    data_dir = dataset_dir(config, workdir)
    if is_per_process(config):
        return _ensure_process_prepared(config, data_dir)
    feature_map = os.path.join(data_dir, layout.FEATURE_MAP)
    if jax.process_index() == 0 and not os.path.exists(feature_map):
        _prepare(config, data_dir)
    if jax.process_count() > 1:
        # Every process passes this barrier, whether or not it found the dataset.
        multihost_utils.sync_global_devices("mlctr: dataset ready")
    if not os.path.exists(feature_map):
        raise RunError(
            f"process {jax.process_index()} finds no prepared dataset at {data_dir} after "
            "process 0 prepared it: put config.data.data_dir on storage all hosts share, or "
            "prepare it on every host first (python -m mlctr.data.prepare ...)")
    return data_dir


def _prepare(config: ml_collections.ConfigDict, out: str, **processes) -> None:
    """Prepares the dataset of `config` into `out` (`processes`: its process options)."""
    raw = config.data.raw
    if config.data.dataset == "synthetic":
        raw = raw or os.path.join(out, "raw", "synthetic_criteo.txt")
    elif not raw:
        raise RunError(f"no prepared dataset at {out} (config.data.data_dir) and "
                       f"config.data.raw names no raw {config.data.dataset} file to "
                       "prepare it from")
    logging.info("Preparing %s dataset into %s", config.data.dataset, out)
    spec = config.data.get("feature_spec", "") or None
    if spec is not None and config.data.dataset != "csv":
        raise RunError(f"config.data.feature_spec is for data.dataset='csv' (got "
                       f"{config.data.dataset!r})")
    try:
        prepare(
            config.data.dataset, raw, out, protocol=config.data.protocol,
            skip_bad_rows=config.data.skip_bad_rows, seed=config.data.split_seed,
            num_rows=config.data.num_rows if config.data.dataset == "synthetic" else None,
            vocab_mode=config.vocab.mode, hash_buckets=config.vocab.hash_buckets,
            field_buckets=config.vocab.field_buckets or None, max_rows=config.vocab.max_rows,
            feature_spec=spec, **processes)
    except ValueError as e:  # prepare's one-line argument errors, in the config's terms
        raise RunError(f"cannot prepare {out} from config.data / config.vocab: {e}"
                       + (" (a csv dataset names its columns in config.data.feature_spec)"
                          if config.data.dataset == "csv" and spec is None else "")) from None


def _ensure_process_prepared(config: ml_collections.ConfigDict, data_dir: str) -> str:
    """Every process prepares its own rows unless they are there; all learn who failed."""
    index, count = jax.process_index(), jax.process_count()
    own = process_dir(data_dir, index, count)
    error = None
    try:
        check_process_count(data_dir, count)
        if not os.path.exists(os.path.join(own, layout.FEATURE_MAP)):
            _prepare(config, own, process_index=index, process_count=count)
    except ValueError as e:  # prepare's one-line argument errors (e.g. too many processes)
        error = RunError(f"config.data.dataset={config.data.dataset!r}: {e}")
    except (RunError, DataError, LockedError) as e:
        error = e
    _gather_outcome("prepare their datasets", error, np.zeros(0, np.uint8))
    return own


def _gather_outcome(what: str, error: Exception | None, payload: np.ndarray) -> np.ndarray:
    """Every process's uint8 `payload` [P, n], once all processes have tried `what`.

    Raises:
      `error` on the process that met it; on the others a RunError naming the
      processes that failed, so no process waits on one that has stopped.
    """
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return payload[None]
    flagged = np.concatenate([np.array([error is not None], np.uint8), payload])
    gathered = np.asarray(multihost_utils.process_allgather(flagged))
    if error is not None:
        raise error
    failed = np.flatnonzero(gathered[:, 0]).tolist()
    if failed:
        raise RunError(f"process(es) {failed} could not {what} (each says why in its own "
                       f"log); process {jax.process_index()} stops with them")
    return gathered[:, 1:]


def open_run_dataset(config: ml_collections.ConfigDict, workdir: str):
    """Opens the prepared dataset of a run (checked against `config.data.dataset`).

    A per-process dataset (`is_per_process`) opens as a `reader.ProcessShard` of this
    process's own directory, once every process has opened its own.

    Raises:
      RunError: there is no prepared dataset (run `ensure_prepared` first).
      mlctr.data.errors.DatasetError: the dataset is damaged or of another kind.
    """
    data_dir = dataset_dir(config, workdir)
    if is_per_process(config):
        return _open_process_shard(config, data_dir)
    return _open(config, data_dir)


def _open(config: ml_collections.ConfigDict, data_dir: str):
    """The PreparedDataset at `data_dir`, of config's dataset kind and vocab mode."""
    if not os.path.exists(os.path.join(data_dir, layout.FEATURE_MAP)):
        raise RunError(f"no prepared dataset at {data_dir} (config.data.data_dir): prepare "
                       "it first (mlctr.run.inputs.ensure_prepared(config, workdir), or "
                       "python -m mlctr.data.prepare ...)")
    dataset = PreparedDataset(data_dir, expected_dataset=config.data.dataset)
    mode = dataset.feature_map.get("vocab", {}).get("mode", "fit")
    if mode != config.vocab.mode:
        raise RunError(f"{data_dir} holds a dataset prepared with vocab mode {mode!r}, but "
                       f"config.vocab.mode is {config.vocab.mode!r}: choose another "
                       "config.data.data_dir or prepare it again with --overwrite")
    check_vocab_config(config, dataset.feature_map, data_dir)
    dataset.hold()  # every split opened now: a dataset swapped in later is not read
    return dataset


def check_vocab_config(config: ml_collections.ConfigDict, feature_map: dict,
                       data_dir: str) -> None:
    """RunError when config.vocab asks for tables other than the prepared dataset's.

    An existing dataset is used as prepared, so a setting it was not prepared with
    would be silently ignored (config.json saying 256 buckets of a run that trained on
    4096): hash_buckets / field_buckets of a fitted dataset, other buckets than the
    hashed dataset's, or a max_rows it was not capped at.
    """
    vocab, cv = feature_map.get("vocab") or {}, config.vocab
    redo = ("prepare it again with these settings (python -m mlctr.data.prepare ... "
            "--overwrite), or set config.vocab to match the dataset")
    if vocab.get("mode", "fit") == "fit":
        if cv.field_buckets or int(cv.hash_buckets) != hashing.DEFAULT_BUCKETS:
            raise RunError("config.vocab.hash_buckets / field_buckets apply to vocab.mode="
                           f"'hash' only (got hash_buckets={cv.hash_buckets}, field_buckets="
                           f"{cv.field_buckets!r} with mode 'fit'): drop them or use hash mode")
        if int(cv.max_rows) != int(vocab.get("max_rows", 0)):
            raise RunError(f"config.vocab.max_rows is {cv.max_rows}, but {data_dir} was "
                           f"prepared with max_rows {vocab.get('max_rows', 0)} (0: no cap), "
                           f"and a prepared dataset is used as it is: {redo}")
        return
    fields = feature_map["fields"]
    try:
        wanted = hashing.field_bucket_counts(
            [f["name"] for f in fields], hash_buckets=cv.hash_buckets,
            field_buckets=cv.field_buckets or None, max_rows=cv.max_rows)
    except ValueError as e:
        raise RunError(f"config.vocab: {e}") from None
    differ = [(f["name"], w, f.get("hash_buckets")) for f, w in zip(fields, wanted)
              if w != f.get("hash_buckets")]
    if differ:
        shown = ", ".join(f"{name} {w} vs {h}" for name, w, h in differ[:4])
        raise RunError(f"config.vocab (hash_buckets={cv.hash_buckets}, field_buckets="
                       f"{cv.field_buckets!r}, max_rows={cv.max_rows}) asks for other buckets "
                       f"than {data_dir} was prepared with ({len(differ)} field(s): {shown}, "
                       f"config vs dataset), and a prepared dataset is used as it is: {redo}")


def _open_process_shard(config: ml_collections.ConfigDict, data_dir: str):
    """This process's own rows, with every process's train rows and sources."""
    index, count = jax.process_index(), jax.process_count()
    own, dataset, error = process_dir(data_dir, index, count), None, None
    try:
        check_process_count(data_dir, count)
        dataset = _open(config, own)
        split = dataset.feature_map.get("split", {})
        prepared_as = (split.get("process_index"), split.get("process_count"))
        if prepared_as != (index, count):
            raise RunError(f"{layout.feature_map_path(own)}: prepared as process "
                           f"{prepared_as[0]} of {prepared_as[1]}, but {own} is process "
                           f"{index} of {count}'s: prepare it again with --process_index="
                           f"{index} --process_count={count} --overwrite")
    except (RunError, DataError) as e:
        error = e
    gathered = _gather_outcome("open their datasets", error, _shard_summary(dataset))
    rows = [int.from_bytes(g[:8].tobytes(), "little") for g in gathered]
    sources = [g[8:40].tobytes().hex() for g in gathered]
    differ = [p for p, g in enumerate(gathered) if g[40:].tobytes() != gathered[0][40:].tobytes()]
    if differ:
        raise RunError(f"the valid/test splits (or vocabulary options) of process(es) {differ} "
                       f"differ from process 0's (under {data_dir}): every process evaluates "
                       "the same rows, so prepare all of them with the same day 23 and "
                       "config.vocab")
    shard = ProcessShard(dataset, index, rows, sources)
    batch_size = config.train.batch_size
    if batch_size > 0 and batch_size % count == 0:
        logging.info("%s: train rows by process %s; %d rows of every batch each, %d steps per "
                     "epoch (the smallest process's); rows left out per epoch by process %s",
                     config.data.dataset, rows, batch_size // count,
                     shard.num_train_batches(batch_size), shard.rows_left_out(batch_size))
    return shard


def _shard_summary(dataset) -> np.ndarray:
    """uint8 [72]: train rows (8 bytes), source sha256, and a digest of what every
    process must share (fields, vocab options, valid and test files); zeros if None."""
    if dataset is None:
        return np.zeros(72, np.uint8)
    feature_map = dataset.feature_map
    checksums = feature_map.get("checksums", {}).get("files", {})
    shared = {"fields": feature_map["fields"], "vocab": feature_map.get("vocab"),
              "eval": {name: checksums.get(name) for name in sorted(checksums)
                       if not name.startswith("train")},
              "splits": {s: feature_map["splits"][s] for s in ("valid", "test")}}
    digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).digest()
    source = bytes.fromhex(feature_map.get("source", {}).get("sha256") or "0" * 64)
    rows = dataset.num_examples("train").to_bytes(8, "little")
    return np.frombuffer(rows + source + digest, np.uint8).copy()


def dataset_fingerprint(dataset) -> dict:
    """What a checkpoint must agree with to resume on this dataset (of a ProcessShard:
    every process's train rows and sources, the same on every process)."""
    if isinstance(dataset, ProcessShard):
        return {"vocab_size": dataset.vocab_size, "num_fields": dataset.num_fields,
                "train_examples": dataset.process_train_rows,
                "source_sha256": dataset.process_sources,
                "layout_sha256": layout_digest(dataset.feature_map)}
    return {"vocab_size": dataset.vocab_size, "num_fields": dataset.num_fields,
            "train_examples": dataset.num_examples("train"),
            "source_sha256": dataset.feature_map.get("source", {}).get("sha256"),
            "layout_sha256": layout_digest(dataset.feature_map)}


def warn_if_replaced(dataset) -> bool:
    """Logs a warning when the dataset directory now holds another dataset than the one
    the run opened (a `prepare --overwrite` while it trained); the run goes on with the
    files it opened (`PreparedDataset.hold`). True if replaced."""
    try:
        now = layout.read_feature_map(dataset.data_dir)
    except (DataError, OSError):
        now = None
    if now is not None and now.get("checksums") == dataset.feature_map.get("checksums"):
        return False
    logging.warning("%s was replaced (prepared again) while this run trained; the run "
                    "evaluates on the files it opened at its start, and dataset.json records "
                    "those; a resume or predict on the new dataset is checked against it",
                    dataset.data_dir)
    return True


def layout_digest(feature_map: dict) -> str:
    """SHA-256 of every table-shaping choice of a dataset: each field's name, kind, offset,
    rows and hash buckets, and the vocabulary options (mode, hash function version, bucket
    count, row cap). Two datasets with one `vocab_size` but other per-field buckets (a
    hashed dataset prepared again with other field_buckets) map ids to other rows: a run
    of one must not resume on, or score, the other."""
    keys = ("name", "kind", "offset", "vocab_size", "hash_buckets")
    shape = {"fields": [{k: field.get(k) for k in keys} for field in feature_map["fields"]],
             "vocab": feature_map.get("vocab") or {"mode": "fit"}}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


# What each fingerprint key means, for the line that names a difference.
_FINGERPRINT_WORDS = {"layout_sha256": "the table layout (per-field rows, hash buckets, "
                                       "vocabulary options)",
                      "source_sha256": "the raw file's SHA-256",
                      "train_examples": "the train rows", "vocab_size": "vocab_size",
                      "num_fields": "the number of fields"}


def fingerprint_differences(recorded: dict, now: dict, then: str = "at training") -> list[str]:
    """What differs between a recorded dataset fingerprint and the current one, in words.

    Keys the record lacks are not compared: it was written before they existed (a run
    from before `layout_sha256` resumes and scores as it did), so a newer fingerprint
    never makes an old run unusable by itself.
    """
    out, recorded, now = [], recorded or {}, now or {}
    for key in sorted(now):
        if key in recorded and recorded[key] != now[key]:
            before, after = recorded[key], now[key]
            if key.endswith("sha256") and isinstance(before, str) and isinstance(after, str):
                before, after = before[:12], after[:12]
            out.append(f"{_FINGERPRINT_WORDS.get(key, key)} {before} {then}, {after} now")
    return out


def check_batch_slices(dataset, mesh, batch_size: int) -> None:
    """Fails early when a global batch does not divide over the processes' readers.

    Raises:
      ValueError: the batch is not a multiple of the mesh's data blocks.
      RunError: processes train from their own rows (a ProcessShard) but two of them
        share a slice of the batch (peers split across processes): each needs its own.
    """
    _, count = sharding.process_batch_slice(mesh, batch_size)
    if isinstance(dataset, ProcessShard) and count != dataset.process_count:
        raise RunError(f"{dataset.process_count} processes train from their own rows of "
                       f"{dataset.feature_map['dataset']}, so each needs its own slice of "
                       f"the batch, but the mesh {dict(mesh.shape)} cuts it into {count}: "
                       "split config.mesh.data (x mesh.table) over every process")


def write_dataset_record(workdir: str, kind: str, fingerprint: dict) -> None:
    """<workdir>/dataset.json: the fingerprint and the dataset kind (process 0 only)."""
    if jax.process_index() == 0:
        path = os.path.join(workdir, DATASET_RECORD)
        atomic.write_json(path, {**fingerprint, "dataset": kind}, indent=1)


def prefetch(iterator: Iterator[dict], place: Callable[[dict], Any] = jax.device_put,
             size: int = 2) -> Iterator[dict]:
    """Reads and places batches in a background thread, overlapping the step.

    The data pipeline's one read-ahead loop (`mlctr.data.parsing.stream.background`):
    its errors surface here, and closing the returned generator stops the thread and
    closes `iterator`.

    Args:
      iterator: host batches.
      place: turns a host batch into device arrays (e.g. `sharding.global_batch`).
      size: batches read ahead.
    """

    def placed() -> Iterator:
        try:
            for batch in iterator:
                yield place(batch)
        finally:
            if hasattr(iterator, "close"):
                iterator.close()

    return background(placed(), size)
