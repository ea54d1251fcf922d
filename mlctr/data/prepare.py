"""Turns a raw Criteo / Avazu / synthetic file (BARS x4 protocol) or the csv splits of a
BARS x1 dataset (mlctr.data.bars_csv) into a prepared dataset.

    python -m mlctr.data.prepare --dataset=criteo --raw=train.txt --out=data/criteo_x4_001
    python -m mlctr.data.prepare --dataset=avazu --raw=train.csv.gz --out=data/avazu_x4_001
    python -m mlctr.data.prepare --dataset=synthetic --raw=data/raw/synthetic.txt \\
        --num_rows=1000000 --out=data/synthetic
    python -m mlctr.data.prepare --dataset=frappe_x1 --raw=Frappe_x1/ --out=data/frappe_x1
    python -m mlctr.data.prepare --dataset=csv --raw=mine/ --feature_spec=mine/spec.json \\
        --out=data/mine

Two streaming passes, memory bounded by the chunk size and the vocabularies:

1. Read the raw file in chunks (`mlctr.data.parsing.RawFile`, a reading thread),
   parse each chunk into per-field int64 keys (PARSE_THREADS threads, in order),
   assign each row its split (`mlctr.data.split`), give every distinct key of every
   field a temporary code (`mlctr.data.vocab.KeyCoder`), count the train-split
   occurrences, and append the codes to `{split}_ids.npy` (the chunk's rows sorted by
   split, file order within each).
2. Fit the vocabularies on the train counts (min_count, OOV), then rewrite the code
   files in place as global ids (per-field offset + local id), in PARSE_THREADS
   threads.

3. Record the block checksums of every file in `feature_map.json`, written last.

With `vocab_mode="hash"` (mlctr.data.hashing) pass 1 writes the final ids (each value
hashed into its field's buckets) and pass 2 is skipped: no vocabulary is fit, so any
stream of rows is prepared in one pass. `--dataset=criteo_1tb` reads the day files of
the Criteo 1TB logs with the MLPerf split (mlctr.data.criteo_1tb), in a multi-process
run each process its own train days (`--process_index`, `--process_count`):

    python -m mlctr.data.prepare --dataset=criteo_1tb --raw=criteo_1tb/ \
        --vocab_mode=hash --max_rows=40000000 --out=data/criteo_1tb

Nothing is lost on failure: the dataset is built in a temporary directory next to
`--out` (so on the same file system) and swapped in atomically once complete, under
an exclusive lock on `--out`; a dataset already there is replaced only with
`--overwrite`. Bad input raises `DataError`, and a problem with `--out` (exists, not
writable, disk full) `DatasetError`; the CLI prints either as one line and exits 1.
`skip_bad_rows` skips bad rows instead and counts them by reason in the feature map.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np

from mlctr import locking, xla_cpu
from mlctr.data import avazu, bars_csv, criteo, criteo_1tb, layout, hashing, parsing
from mlctr.data import split as split_lib, synthetic
from mlctr.data import vocab as vocab_lib
from mlctr.data.errors import DataError, DatasetError

CSV_DATASETS = tuple(bars_csv.FORMATS) + ("csv",)
DATASETS = ("criteo", "avazu", "synthetic", "criteo_1tb") + CSV_DATASETS
PROTOCOLS = ("x4_001", "x4_002")  # of the raw formats: they set min_count (criteo.MIN_COUNT)
# The csv datasets keep their given split and min_count; their feature map records these.
OWN_PROTOCOLS = {**{name: "x1" for name in bars_csv.FORMATS}, "csv": "csv"}
ALL_PROTOCOLS = PROTOCOLS + ("x1", "csv")
VOCAB_MODES = hashing.MODES
RAW_FORMATS = {"criteo": criteo, "avazu": avazu, "criteo_1tb": criteo_1tb}
_REMAP_ROWS = 1 << 15
PARSE_THREADS = 2  # parsing (and remapping) threads; the coding runs in the caller's


def _malloc_trim():
    """glibc's malloc_trim, or None: returns freed heap pages to the OS."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()
_TRIM_EVERY_CHUNKS = 32


def _release_freed_memory() -> None:
    # Parsing allocates and frees many chunk-sized arrays from three threads; glibc keeps
    # freed heap pages, so without this the resident set creeps up with the file length.
    if _TRIM is not None:
        _TRIM(0)


def raw_format_module(name: str):
    """The module (criteo or avazu) that parses a raw format."""
    try:
        return RAW_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown raw format {name!r}; expected one of {sorted(RAW_FORMATS)}")


def _log(message: str) -> None:
    try:
        from absl import logging
        logging.info(message)
    except ImportError:  # pragma: no cover
        pass


def prepare(dataset: str, raw: str, out: str, *, protocol: str = "x4_001",
            skip_bad_rows: bool = False, seed: int = 2018, num_rows: int | None = None,
            synthetic_format: str = "criteo",
            chunk_bytes: int = parsing.DEFAULT_CHUNK_BYTES, overwrite: bool = False,
            feature_spec=None, vocab_mode: str = "fit",
            hash_buckets: int = hashing.DEFAULT_BUCKETS, field_buckets=None,
            max_rows: int = 0, process_index: int = 0, process_count: int = 1) -> dict:
    """Prepares a dataset directory from a raw file (or the csv splits of one).

    The dataset is built in a temporary directory next to `out` and swapped in only
    once complete, so a failure (bad input, a full disk, a kill) leaves whatever `out`
    held before untouched; two `prepare` into one `out` exclude each other
    (mlctr.locking). Entries of `out` that are not dataset files (e.g. the raw/ folder
    of a synthetic dataset) are kept.

    Args:
        dataset: "criteo", "avazu", "synthetic", "criteo_1tb", a BARS x1 csv dataset
            ("frappe_x1", "movielens_x1", "criteo_x1", "avazu_x1") or "csv" (see
            mlctr.data.bars_csv).
        raw: the raw file (plain or gzip). For "synthetic": where the generated raw file
            is written (and its true probabilities next to it, see mlctr.data.synthetic).
            For the csv datasets: the directory holding train.csv, valid.csv, test.csv;
            for "criteo_1tb" the one holding day_0 .. day_23 (mlctr.data.criteo_1tb).
        out: the output directory (created).
        protocol: "x4_001" (min_count Criteo 10 / Avazu 2) or "x4_002" (2 / 1).
        skip_bad_rows: skip and count bad rows instead of failing on the first.
        seed: seed of the 8:1:1 split (BARS: 2018); for "synthetic" also the generator's.
        num_rows: "synthetic" only: rows to generate. None uses an existing generated
            file at `raw`.
        synthetic_format: "synthetic" only: "criteo" or "avazu" raw format.
        chunk_bytes: bytes of raw text parsed at a time (bounds the memory).
        overwrite: replace a prepared dataset already in `out` (else an error).
        feature_spec: "csv" only: the label and feature columns (a dict or the path of a
            JSON file, see mlctr.data.bars_csv).
        vocab_mode: "fit" (vocabularies fit on train, min_count, OOV) or "hash" (every
            value hashed into its field's buckets in one pass, see mlctr.data.hashing).
        hash_buckets: "hash": buckets per field.
        field_buckets: "hash": per-field bucket counts, "name=count,..." or a dict.
        max_rows: > 0 caps every field's table at this many rows (both modes).
        process_index: "criteo_1tb": this process (its share of the train days).
        process_count: "criteo_1tb": processes sharing the train days ("hash" only
            when > 1: fitting needs every process's rows).

    Returns:
        The feature map (as saved in out/feature_map.json).

    Raises:
        DataError: bad input (missing/empty file, malformed row, corrupt gzip, ...).
        DatasetError: `out` holds a dataset (without overwrite), cannot be written, or
            the disk ran full.
        LockedError: another process is preparing into `out`.
        ValueError: bad arguments.
    """
    _check_arguments(dataset, protocol=protocol, num_rows=num_rows,
                     feature_spec=feature_spec)
    vocab = _VocabOptions.make(vocab_mode, hash_buckets=hash_buckets,
                               field_buckets=field_buckets, max_rows=max_rows)
    _check_processes(dataset, vocab, process_index, process_count)
    out = os.path.abspath(os.fspath(out))
    raw = str(raw)
    _check_output(out, overwrite)
    build = _builder(dataset, raw, protocol=protocol, skip_bad_rows=skip_bad_rows, seed=seed,
                     num_rows=num_rows, synthetic_format=synthetic_format,
                     chunk_bytes=chunk_bytes, feature_spec=feature_spec, vocab=vocab,
                     processes=(process_index, process_count))
    created = not os.path.exists(out)
    try:
        try:
            with locking.exclusive_lock(out, "prepare"):
                _check_output(out, overwrite)  # another prepare may have finished since
                return _build_and_swap(out, build)
        except OSError as e:
            raise _output_error(out, e) from None
    except BaseException:
        if created:
            _remove_if_only_lock(out)
        raise


def _check_arguments(dataset, *, protocol, num_rows, feature_spec) -> None:
    """ValueError (one line) for a dataset, protocol or option that does not apply."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    problem = protocol_problem(dataset, protocol)
    if problem:
        raise ValueError(problem)
    if num_rows is not None and dataset != "synthetic":
        raise ValueError("num_rows is only for dataset='synthetic'")
    if (feature_spec is None) == (dataset == "csv"):
        raise ValueError("feature_spec is for dataset='csv', which needs one")


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


def _check_processes(dataset, vocab, process_index: int, process_count: int) -> None:
    """ValueError unless the process options fit (criteo_1tb only; > 1: hash mode)."""
    if dataset == "criteo_1tb":
        criteo_1tb.train_days(process_index, process_count)  # checks them
        if process_count > 1 and vocab.mode != "hash":
            raise ValueError("criteo_1tb with process_count > 1 needs vocab_mode='hash': a "
                             "fitted vocabulary would need every process's train days")
    elif (process_index, process_count) != (0, 1):
        raise ValueError("process_index / process_count are for dataset='criteo_1tb'")


def _builder(dataset, raw, *, protocol, skip_bad_rows, seed, num_rows, synthetic_format,
             chunk_bytes, feature_spec, vocab, processes):
    """build(directory, writers) -> feature map for `dataset`, its inputs checked first."""
    if dataset == "criteo_1tb":
        sources = criteo_1tb.source_files(raw, *processes)  # before anything is created

        def build(directory, writers):
            return _prepare_days(raw, sources, directory, vocab, protocol=protocol,
                                 processes=processes, skip_bad_rows=skip_bad_rows,
                                 chunk_bytes=chunk_bytes, writers=writers)
        return build
    if dataset in CSV_DATASETS:
        csv_format = (bars_csv.CsvFormat.from_spec(feature_spec) if dataset == "csv"
                      else bars_csv.FORMATS[dataset])
        for split in bars_csv.SPLIT_FILES:  # before anything is created
            parsing.RawFile(bars_csv.split_file(raw, split)).check_exists()

        def build(directory, writers):
            return _prepare_csv(dataset, raw, directory, csv_format, vocab, writers=writers,
                                skip_bad_rows=skip_bad_rows, chunk_bytes=chunk_bytes)
        return build
    if dataset != "synthetic":
        parsing.RawFile(raw).check_exists()  # before anything is created

    def build(directory, writers):
        # Under the lock: generating synthetic rows writes the raw file.
        synthetic_description, raw_format = _raw_source(
            dataset, raw, num_rows=num_rows, seed=seed, synthetic_format=synthetic_format)
        parsing.RawFile(raw).check_exists()
        return _prepare(dataset, raw, directory, raw_format_module(raw_format), vocab,
                        protocol=protocol, skip_bad_rows=skip_bad_rows, seed=seed,
                        synthetic_description=synthetic_description,
                        chunk_bytes=chunk_bytes, writers=writers)
    return build


def _remove_if_only_lock(out: str) -> None:
    """Removes an `out` this call created and left holding nothing but the lock file."""
    with contextlib.suppress(OSError):
        if os.listdir(out) == [locking.LOCK_NAME]:
            os.remove(os.path.join(out, locking.LOCK_NAME))
            os.rmdir(out)


def _check_output(out: str, overwrite: bool) -> None:
    """One clear DatasetError when `out` cannot take a dataset (checked before any work)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(out, "exists and is not a directory; choose another --out",
                           reason="output_not_directory")
    if os.path.exists(layout.feature_map_path(out)) and not overwrite:
        raise DatasetError(out, "already holds a prepared dataset; pass --overwrite "
                           "(overwrite=True) to replace it, or choose another --out",
                           reason="output_exists")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK):
        raise DatasetError(out, f"cannot be written: no write permission in {existing}",
                           reason="output_not_writable")


def _output_error(out: str, error: OSError) -> DatasetError:
    """The one-line DatasetError for an OSError met while writing a dataset into `out`."""
    where = error.filename or out
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if error.errno == errno.ENOSPC else \
            "disk quota exceeded"
        try:
            free = f" ({shutil.disk_usage(os.path.dirname(out)).free / 2**30:.1f} GiB free now)"
        except OSError:
            free = ""
        return DatasetError(out, f"{what} while writing {where}{free}; nothing was "
                            "changed in the output directory: free space and run again",
                            reason="no_space")
    return DatasetError(out, f"cannot write {where}: {error.strerror or error}; nothing was "
                        "changed in the output directory", reason="output_error")


def _raw_source(dataset, raw, *, num_rows, seed, synthetic_format):
    """(synthetic description or None, raw format name); generates synthetic rows."""
    if dataset != "synthetic":
        return None, dataset
    if num_rows is not None:
        description = synthetic.generate(raw, num_rows=num_rows, seed=seed,
                                         raw_format=synthetic_format)
    else:
        description = synthetic.read_spec(raw)
        if description is None:
            raise DataError(raw, "no synthetic description "
                            f"{synthetic.spec_path(raw)!r}: pass num_rows to generate one",
                            reason="missing_file")
    return description, description["spec"]["raw_format"]


def _build_and_swap(out: str, build) -> dict:
    """Runs build(directory, writers) -> feature map in a temporary sibling of `out`, adds
    the checksums and swaps the result in (the caller holds the lock)."""
    xla_cpu.keep_freed_blocks()
    _remove_stale_builds(out)
    directory = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=_build_prefix(out))
    writers: list[layout.NpyWriter] = []
    try:
        feature_map = build(directory, writers)
        feature_map["checksums"] = layout.compute_checksums(directory, feature_map)
        layout.write_json_atomic(layout.feature_map_path(directory), feature_map)
        _make_readable(directory)
        _swap_into(directory, out)
    finally:
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(directory, ignore_errors=True)
    return feature_map


def _build_prefix(out: str) -> str:
    return f".{os.path.basename(out)}.prepare-"


def _remove_stale_builds(out: str) -> None:
    """Removes build directories a killed prepare left next to `out` (the lock is ours)."""
    parent, prefix = os.path.dirname(out), _build_prefix(out)
    for name in os.listdir(parent):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _make_readable(build: str) -> None:
    """Gives the build directory the mode a plain mkdir would (mkdtemp makes it 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(build, 0o777 & ~umask)


def _dataset_entries() -> set[str]:
    """The names in a dataset directory that prepare writes (all else in `out` is kept)."""
    names = {layout.FEATURE_MAP, "vocab"}
    for split in layout.SPLITS:
        names |= {os.path.basename(path("", split))
                  for path in (layout.ids_path, layout.label_path, layout.true_prob_path)}
    return names


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two directories (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the C library or the file system does not offer it.
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def _swap_into(build: str, out: str) -> None:
    """Puts the finished dataset `build` at `out`; out's other entries move along.

    One atomic exchange where the system offers it, else two renames (between which,
    for an instant, `out` does not exist; a crash there leaves both directories).
    """
    if _exchange(build, out):
        old = build  # the exchange left the previous `out` here
    else:
        old = build + ".old"
        os.rename(out, old)
        try:
            os.rename(build, out)
        except OSError:
            os.rename(old, out)
            raise
    own = _dataset_entries()
    for name in os.listdir(old):  # raw/ of a synthetic dataset, the held .lock, ...
        if name not in own and not os.path.exists(os.path.join(out, name)):
            os.rename(os.path.join(old, name), os.path.join(out, name))
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class _VocabOptions:
    """How a prepare gives ids: fitted vocabularies or hashed buckets (mlctr.data.hashing)."""

    mode: str = "fit"
    hash_buckets: int = hashing.DEFAULT_BUCKETS
    field_buckets: Any = None
    max_rows: int = 0

    @classmethod
    def make(cls, mode: str, *, hash_buckets, field_buckets, max_rows) -> "_VocabOptions":
        """Checked options (ValueError: one line naming the bad argument)."""
        if mode not in VOCAB_MODES:
            raise ValueError(f"unknown vocab_mode {mode!r}; expected one of {VOCAB_MODES}")
        if mode == "fit" and field_buckets:
            raise ValueError("field_buckets is for vocab_mode='hash'")
        hashing.field_bucket_counts([], hash_buckets=hash_buckets, max_rows=max_rows)
        return cls(mode, int(hash_buckets), field_buckets, int(max_rows))

    def encoder(self, out: str, module, with_true_prob: bool, writers: list):
        """The encoder writing `module`'s fields (a raw format or a CsvFormat)."""
        if self.mode == "hash":
            buckets = hashing.field_bucket_counts(
                module.FIELD_NAMES, hash_buckets=self.hash_buckets,
                field_buckets=self.field_buckets, max_rows=self.max_rows)
            return _HashEncoder(out, module, with_true_prob, writers, buckets)
        return _Encoder(out, module.FIELD_NAMES, with_true_prob, writers,
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


class _Encoder:
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
        _release_freed_memory()
        for name in layout.SPLITS:
            layout.update_rows(layout.ids_path(self.out, name),
                            lambda codes: lookup.take(codes + code_offsets),
                            block_rows=_REMAP_ROWS, num_threads=PARSE_THREADS)
        return fields, self._split_entries()


class _HashEncoder(_Encoder):
    """The one pass of a hash-mode prepare: rows -> final global ids (mlctr.data.hashing).

    Args:
        out, with_true_prob, writers: as for `_Encoder`.
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


def _prepare(dataset, raw, out, module, vocab, *, protocol, skip_bad_rows, seed,
             synthetic_description, chunk_bytes, writers) -> dict:
    """Both passes over one raw file, split 8:1:1 by `seed`; returns the feature map."""
    started = time.time()
    true_prob = None
    if synthetic_description is not None:
        true_prob = synthetic.true_prob_path(raw)
        num_true_probs = layout.npy_layout(true_prob)[1][0]
    header_lines = 1 if module is avazu else 0
    encoder = vocab.encoder(out, module, true_prob is not None, writers)
    skipped: collections.Counter = collections.Counter()
    raw_file = parsing.RawFile(raw, chunk_bytes=chunk_bytes)
    for parsed in _parsed_chunks(raw, raw_file, module, skip_bad_rows, skipped, started,
                                 encoder):
        probs = (_chunk_true_probs(true_prob, parsed.line_numbers - 1 - header_lines)
                 if true_prob is not None else None)
        splits = split_lib.assign_splits(encoder.num_rows, len(parsed.labels), seed)
        encoder.add(parsed.keys, parsed.labels, splits, probs)
    num_rows = encoder.num_rows
    if num_rows == 0:
        raise DataError(raw, "no data rows" + (" left after skipping bad rows" if skipped else ""),
                        reason="empty_file")
    if true_prob is not None and num_rows + sum(skipped.values()) != num_true_probs:
        raise DataError(raw, f"{num_rows + sum(skipped.values())} rows but "
                        f"{num_true_probs} true probabilities in {true_prob}",
                        reason="synthetic_mismatch")
    min_count = vocab.min_count(module.MIN_COUNT[protocol])
    fields, splits = encoder.finish(module, min_count)
    feature_map = {
        "format_version": layout.FORMAT_VERSION, "dataset": dataset, "raw_format": module.NAME,
        "protocol": protocol, "min_count": min_count, "seed": seed,
        "split": {"method": "seeded blocks of 10 rows: 8 train, 1 valid, 1 test "
                            "(mlctr.data.split)", "ratios": [8, 1, 1]},
        "source": {"file": os.path.basename(raw), "sha256": raw_file.sha256,
                   "bytes": raw_file.num_bytes, "gzip": raw_file.is_gzip,
                   "rows_read": num_rows + sum(skipped.values()), "rows_kept": num_rows},
        **_feature_map_tail(out, fields, splits, skipped),
        **vocab.feature_map_entry(),
    }
    if synthetic_description is not None:
        feature_map["synthetic"] = synthetic_description
        feature_map["bayes"] = _bayes_metrics(out)
        for name in layout.SPLITS:
            feature_map["files"][name]["true_prob"] = os.path.basename(
                layout.true_prob_path(out, name))
    _log(f"{raw}: prepared {num_rows} rows in {time.time() - started:.1f}s")
    return feature_map


def _prepare_csv(dataset, raw_dir, out, csv_format, vocab, *, writers, skip_bad_rows,
                 chunk_bytes) -> dict:
    """Both passes over the given train/valid/test csv files; returns the feature map."""
    started = time.time()
    encoder = vocab.encoder(out, csv_format, False, writers)
    skipped: collections.Counter = collections.Counter()
    sources = {}
    for s, split in enumerate(bars_csv.SPLIT_FILES):
        path = bars_csv.split_file(raw_dir, split)
        reader = csv_format.reader(path, labeled=True)
        raw_file = parsing.RawFile(path, chunk_bytes=chunk_bytes)
        before_rows, before_skipped = encoder.num_rows, sum(skipped.values())
        for parsed in _parsed_chunks(path, raw_file, reader, skip_bad_rows, skipped, started,
                                     encoder):
            encoder.add(parsed.keys, parsed.labels,
                        np.full(len(parsed.labels), s, np.int64))
        kept = encoder.num_rows - before_rows
        if kept == 0:
            raise DataError(path, "no data rows" + (" left after skipping bad rows"
                                                    if sum(skipped.values()) > before_skipped
                                                    else ""), reason="empty_file")
        sources[split] = {"file": os.path.basename(path), "sha256": raw_file.sha256,
                          "bytes": raw_file.num_bytes, "gzip": raw_file.is_gzip,
                          "rows_read": kept + sum(skipped.values()) - before_skipped,
                          "rows_kept": kept}
    fields, splits = encoder.finish(csv_format, csv_format.min_count)
    combined = hashlib.sha256("".join(v["sha256"] for v in sources.values()).encode())
    feature_map = {
        "format_version": layout.FORMAT_VERSION, "dataset": dataset, "raw_format": "csv",
        "protocol": "x1" if dataset in bars_csv.FORMATS else "csv",
        "min_count": vocab.min_count(csv_format.min_count), "seed": None,
        "split": {"method": "given: train.csv, valid.csv, test.csv"},
        "csv": csv_format.to_json(),
        "source": {"directory": os.path.abspath(raw_dir), "sha256": combined.hexdigest(),
                   "rows_read": sum(v["rows_read"] for v in sources.values()),
                   "rows_kept": encoder.num_rows, "files": sources},
        **_feature_map_tail(out, fields, splits, skipped),
        **vocab.feature_map_entry(),
    }
    _log(f"{raw_dir}: prepared {encoder.num_rows} rows in {time.time() - started:.1f}s")
    return feature_map


def _prepare_days(raw_dir, sources, out, vocab, *, protocol, processes, skip_bad_rows,
                  chunk_bytes, writers) -> dict:
    """Criteo 1TB: this process's train days, then day 23 cut into test and valid halves
    (mlctr.data.criteo_1tb); returns the feature map."""
    started = time.time()
    module = criteo_1tb
    encoder = vocab.encoder(out, module, False, writers)
    skipped: collections.Counter = collections.Counter()
    files = {}
    for day, path in sources:
        test_lines = None
        if day == module.EVAL_DAY:
            test_lines, _ = module.eval_split_sizes(module.count_lines(path))
        raw_file = parsing.RawFile(path, chunk_bytes=chunk_bytes)
        before_rows, before_skipped = encoder.num_rows, sum(skipped.values())
        for parsed in _parsed_chunks(path, raw_file, module, skip_bad_rows, skipped, started,
                                     encoder):
            if test_lines is None:
                splits = np.zeros(len(parsed.labels), np.int64)
            else:  # by physical line, so a skipped bad row moves no other row
                splits = np.where(parsed.line_numbers <= test_lines, split_lib.TEST,
                                  split_lib.VALID).astype(np.int64)
            encoder.add(parsed.keys, parsed.labels, splits)
        kept = encoder.num_rows - before_rows
        files[os.path.basename(path)] = {
            "sha256": raw_file.sha256, "bytes": raw_file.num_bytes, "gzip": raw_file.is_gzip,
            "rows_read": kept + sum(skipped.values()) - before_skipped, "rows_kept": kept}
    if encoder.num_rows == 0:
        raise DataError(raw_dir, "no data rows" + (" left after skipping bad rows" if skipped
                                                   else ""), reason="empty_file")
    min_count = vocab.min_count(module.MIN_COUNT[protocol])
    fields, splits = encoder.finish(module, min_count)
    combined = hashlib.sha256("".join(v["sha256"] for v in files.values()).encode())
    process_index, process_count = processes
    feature_map = {
        "format_version": layout.FORMAT_VERSION, "dataset": module.NAME,
        "raw_format": module.NAME, "protocol": protocol, "min_count": min_count, "seed": None,
        "split": {"method": "MLPerf DLRM: days 0-22 train; day 23 halved "
                            "(np.array_split): first half test, second half valid",
                  "train_days": [d for d, _ in sources if d != module.EVAL_DAY],
                  "process_index": process_index, "process_count": process_count},
        "source": {"directory": os.path.abspath(raw_dir), "sha256": combined.hexdigest(),
                   "rows_read": sum(v["rows_read"] for v in files.values()),
                   "rows_kept": encoder.num_rows, "files": files},
        **_feature_map_tail(out, fields, splits, skipped),
        **vocab.feature_map_entry(),
    }
    _log(f"{raw_dir}: prepared {encoder.num_rows} rows in {time.time() - started:.1f}s")
    return feature_map


def _parsed_chunks(raw, raw_file, module, skip_bad_rows, skipped, started, encoder):
    """The parsed chunks of a raw file; bad rows raise, or are counted into `skipped`."""
    # Chunks are parsed ahead in PARSE_THREADS threads (numpy releases the GIL) while
    # the caller codes the previous one, so parsing and coding use both cores.
    parsed_chunks = parsing.ordered_map(lambda chunk: module.parse_chunk(raw, chunk),
                                        raw_file.chunks(), PARSE_THREADS)
    last_log = time.time()
    with contextlib.closing(parsed_chunks):
        for num_chunks, parsed in enumerate(parsed_chunks, 1):
            if parsed.first_error is not None:
                if not skip_bad_rows:
                    raise parsed.first_error
                skipped.update(parsed.skipped)
            yield parsed
            if num_chunks % _TRIM_EVERY_CHUNKS == 0:
                _release_freed_memory()
            if time.time() - last_log > 30:
                last_log = time.time()
                _log(f"{raw}: {encoder.num_rows} rows read "
                     f"({encoder.num_rows / (last_log - started):.0f}/s)")
    if skipped:
        _log(f"{raw}: skipped {sum(skipped.values())} bad rows: {dict(skipped)}")


def _chunk_true_probs(true_prob: str, raw_rows: np.ndarray) -> np.ndarray:
    """The true probabilities of the given 0-based data rows of the raw file."""
    if not len(raw_rows):
        return np.zeros(0, np.float32)
    return layout.read_rows(true_prob, int(raw_rows[0]),
                         int(raw_rows[-1]) + 1)[raw_rows - raw_rows[0]]


def _feature_map_tail(out: str, fields: list[dict], splits: dict,
                      skipped: collections.Counter) -> dict:
    """The feature map's keys every dataset kind shares: bad rows, fields, splits, files."""
    return {
        "bad_rows": {"skipped": int(sum(skipped.values())),
                     "by_reason": {k: int(v) for k, v in sorted(skipped.items())}},
        "num_fields": len(fields),
        "vocab_size": sum(f["vocab_size"] for f in fields),
        "fields": fields,
        "splits": splits,
        "files": {name: {"ids": os.path.basename(layout.ids_path(out, name)),
                         "label": os.path.basename(layout.label_path(out, name))}
                  for name in layout.SPLITS},
    }


def _bayes_metrics(out: str) -> dict:
    """AUC and logloss of the true probabilities on each split (the Bayes-optimal ones)."""
    from mlctr import metrics

    result = {}
    for name in layout.SPLITS:
        labels = np.load(layout.label_path(out, name), mmap_mode="r")
        probs = np.load(layout.true_prob_path(out, name), mmap_mode="r")
        entry = {"auc": None, "logloss": None}
        if len(labels):
            entry["logloss"] = float(metrics.logloss(labels, probs))
            with contextlib.suppress(ValueError):  # one class only: AUC undefined
                entry["auc"] = float(metrics.auc(labels, probs))
        result[name] = entry
    return result


# ---------------------------------------------------------------------------
# Encoding new files with an existing dataset's vocabularies.


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
    first_line = chunk.data[:chunk.data.index(b"\n") + 1]
    if module is avazu:
        return avazu.is_labeled(first_line) or not first_line.startswith(b"id,hour,")
    num_columns = first_line.count(module.DELIMITER) + 1
    return num_columns != len(module.columns(False))


# ---------------------------------------------------------------------------
# Command line.


def main(argv) -> None:
    """CLI entry point: prepare from the flags; bad input -> one line, exit code 1."""
    from absl import flags

    del argv
    FLAGS = flags.FLAGS
    try:
        feature_map = prepare(
            FLAGS.dataset, FLAGS.raw, FLAGS.out, protocol=FLAGS.protocol,
            skip_bad_rows=FLAGS.skip_bad_rows, seed=FLAGS.seed, num_rows=FLAGS.num_rows,
            synthetic_format=FLAGS.synthetic_format, overwrite=FLAGS.overwrite,
            feature_spec=FLAGS.feature_spec, vocab_mode=FLAGS.vocab_mode,
            hash_buckets=FLAGS.hash_buckets, field_buckets=FLAGS.field_buckets,
            max_rows=FLAGS.max_rows, process_index=FLAGS.process_index,
            process_count=FLAGS.process_count)
    except (DataError, locking.LockedError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    splits = ", ".join(f"{k} {v['num_examples']}" for k, v in feature_map["splits"].items())
    print(f"prepared {FLAGS.out}: {feature_map['num_fields']} fields, vocab_size "
          f"{feature_map['vocab_size']}, {splits}")
    bad = feature_map["bad_rows"]
    if bad["skipped"]:
        print(f"skipped {bad['skipped']} bad rows: " +
              ", ".join(f"{k} {v}" for k, v in bad["by_reason"].items()))
    if "bayes" in feature_map:
        print("Bayes-optimal: " + ", ".join(
            f"{k} auc {v['auc']:.4f} logloss {v['logloss']:.4f}"
            for k, v in feature_map["bayes"].items() if v["auc"] is not None))


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("dataset", None, f"Raw dataset kind: one of {', '.join(DATASETS)}.")
    flags.DEFINE_string("raw", None, "Raw file (synthetic: where it is generated; csv "
                        "datasets: the directory of train.csv, valid.csv, test.csv; "
                        "criteo_1tb: the directory of day_0 .. day_23).")
    flags.DEFINE_string("out", None, "Output directory of the prepared dataset.")
    flags.DEFINE_enum("protocol", "x4_001", list(ALL_PROTOCOLS),
                      "BARS x4 variant (min_count) of a raw file; x1 (BARS x1) or csv for "
                      "the csv datasets, which record it.")
    flags.DEFINE_bool("skip_bad_rows", False, "Skip and count bad rows instead of failing.")
    flags.DEFINE_bool("overwrite", False, "Replace a prepared dataset already in --out.")
    flags.DEFINE_string("feature_spec", None, "--dataset=csv: JSON file naming the label and "
                        "feature columns (mlctr.data.bars_csv).")
    flags.DEFINE_integer("seed", 2018, "Split seed (and synthetic generator seed).")
    flags.DEFINE_integer("num_rows", None, "Synthetic: rows to generate.")
    flags.DEFINE_enum("synthetic_format", "criteo", ["avazu", "criteo"],
                      "Synthetic: raw format to generate.")
    flags.DEFINE_enum("vocab_mode", "fit", list(VOCAB_MODES), "fit: vocabularies fit on "
                      "train (min_count, OOV); hash: values hashed into buckets, one pass.")
    flags.DEFINE_integer("hash_buckets", hashing.DEFAULT_BUCKETS,
                         "--vocab_mode=hash: buckets per field.")
    flags.DEFINE_string("field_buckets", None, "--vocab_mode=hash: per-field buckets, "
                        "e.g. I1=64,C3=100000.")
    flags.DEFINE_integer("max_rows", 0, "Cap on every field's table rows (0: none; "
                         "MLPerf Criteo 1TB: 40000000).")
    flags.DEFINE_integer("process_index", 0, "criteo_1tb: this process (its train days).")
    flags.DEFINE_integer("process_count", 1, "criteo_1tb: processes sharing the train days.")
    flags.mark_flags_as_required(["dataset", "raw", "out"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
