"""The two passes of a prepare over each kind of source: one raw file split 8:1:1 by
seed (`prepare_file`, with the true probabilities of synthetic data), the given
train/valid/test csv files (`prepare_csv`), and the Criteo 1TB day files with the MLPerf
split (`prepare_days`). Each returns the feature map (without checksums)."""
from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import time

import numpy as np
from absl import logging

from mlctr import metrics, xla_cpu
from mlctr.data import avazu, bars_csv, criteo_1tb, layout, parsing
from mlctr.data import split as split_lib, synthetic
from mlctr.data.errors import DataError
from mlctr.data.prepare import encoders

# Parsing allocates and frees many chunk-sized arrays from three threads; glibc keeps freed
# heap pages, so without a trim every so many chunks the resident set creeps up with the
# file length.
_TRIM_EVERY_CHUNKS = 32


def prepare_file(dataset, raw, out, module, vocab, *, protocol, skip_bad_rows, seed,
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
    logging.info(f"{raw}: prepared {num_rows} rows in {time.time() - started:.1f}s")
    return feature_map


def prepare_csv(dataset, raw_dir, out, csv_format, vocab, *, writers, skip_bad_rows,
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
    logging.info(f"{raw_dir}: prepared {encoder.num_rows} rows in {time.time() - started:.1f}s")
    return feature_map


def prepare_days(raw_dir, sources, out, vocab, *, protocol, processes, skip_bad_rows,
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
    logging.info(f"{raw_dir}: prepared {encoder.num_rows} rows in {time.time() - started:.1f}s")
    return feature_map


def _parsed_chunks(raw, raw_file, module, skip_bad_rows, skipped, started, encoder):
    """The parsed chunks of a raw file; bad rows raise, or are counted into `skipped`."""
    # Chunks are parsed ahead in PARSE_THREADS threads (numpy releases the GIL) while the
    # caller codes the previous one, so parsing and coding use both cores.
    parsed_chunks = parsing.ordered_map(lambda chunk: module.parse_chunk(raw, chunk),
                                        raw_file.chunks(), encoders.PARSE_THREADS)
    last_log = time.time()
    with contextlib.closing(parsed_chunks):
        for num_chunks, parsed in enumerate(parsed_chunks, 1):
            if parsed.first_error is not None:
                if not skip_bad_rows:
                    raise parsed.first_error
                skipped.update(parsed.skipped)
            yield parsed
            if num_chunks % _TRIM_EVERY_CHUNKS == 0:
                xla_cpu.release_host_memory()
            if time.time() - last_log > 30:
                last_log = time.time()
                logging.info(f"{raw}: {encoder.num_rows} rows read "
                             f"({encoder.num_rows / (last_log - started):.0f}/s)")
    if skipped:
        logging.info(f"{raw}: skipped {sum(skipped.values())} bad rows: {dict(skipped)}")


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
