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

Modules, by concern: this one (`prepare`: arguments, the lock, which source), `options`
(dataset kinds, protocols, vocabulary options), `sources` (the passes over a raw file, csv
splits, Criteo 1TB days), `encoders` (codes -> vocabularies -> ids, or hashed ids),
`swap` (checks of `out`, the atomic swap), `encode` (`encode_raw`: new files with a
dataset's vocabularies), `__main__` (the CLI).
"""

from __future__ import annotations

import os

from mlctr import locking
from mlctr.data import bars_csv, criteo_1tb, hashing, parsing, synthetic
from mlctr.data.errors import DataError
from mlctr.data.prepare import sources, swap
from mlctr.data.prepare.options import (CSV_DATASETS, DATASETS, PROTOCOLS, VocabOptions,
                                        raw_format_module)


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
    vocab = VocabOptions.make(vocab_mode, hash_buckets=hash_buckets,
                               field_buckets=field_buckets, max_rows=max_rows)
    _check_processes(dataset, vocab, process_index, process_count)
    out = os.path.abspath(os.fspath(out))
    raw = str(raw)
    swap.check_output(out, overwrite)
    build = _builder(dataset, raw, protocol=protocol, skip_bad_rows=skip_bad_rows, seed=seed,
                     num_rows=num_rows, synthetic_format=synthetic_format,
                     chunk_bytes=chunk_bytes, feature_spec=feature_spec, vocab=vocab,
                     processes=(process_index, process_count))
    created = not os.path.exists(out)
    try:
        try:
            with locking.exclusive_lock(out, "prepare"):
                swap.check_output(out, overwrite)  # another prepare may have finished since
                return swap.build_and_swap(out, build)
        except OSError as e:
            raise swap.output_error(out, e) from None
    except BaseException:
        if created:
            swap.remove_if_only_lock(out)
        raise


def _check_arguments(dataset, *, protocol, num_rows, feature_spec) -> None:
    """ValueError (one line) for a dataset, protocol or option that does not apply."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if num_rows is not None and dataset != "synthetic":
        raise ValueError("num_rows is only for dataset='synthetic'")
    if (feature_spec is None) == (dataset == "csv"):
        raise ValueError("feature_spec is for dataset='csv', which needs one")


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
        day_files = criteo_1tb.source_files(raw, *processes)  # before anything is created

        def build(directory, writers):
            return sources.prepare_days(raw, day_files, directory, vocab, protocol=protocol,
                                        processes=processes, skip_bad_rows=skip_bad_rows,
                                        chunk_bytes=chunk_bytes, writers=writers)
        return build
    if dataset in CSV_DATASETS:
        csv_format = (bars_csv.CsvFormat.from_spec(feature_spec) if dataset == "csv"
                      else bars_csv.FORMATS[dataset])
        for split in bars_csv.SPLIT_FILES:  # before anything is created
            parsing.RawFile(bars_csv.split_file(raw, split)).check_exists()

        def build(directory, writers):
            return sources.prepare_csv(dataset, raw, directory, csv_format, vocab,
                                       writers=writers, skip_bad_rows=skip_bad_rows,
                                       chunk_bytes=chunk_bytes)
        return build
    if dataset != "synthetic":
        parsing.RawFile(raw).check_exists()  # before anything is created

    def build(directory, writers):
        # Under the lock: generating synthetic rows writes the raw file.
        synthetic_description, raw_format = _raw_source(
            dataset, raw, num_rows=num_rows, seed=seed, synthetic_format=synthetic_format)
        parsing.RawFile(raw).check_exists()
        return sources.prepare_file(
            dataset, raw, directory, raw_format_module(raw_format), vocab, protocol=protocol,
            skip_bad_rows=skip_bad_rows, seed=seed,
            synthetic_description=synthetic_description, chunk_bytes=chunk_bytes,
            writers=writers)
    return build


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

