"""Scores a raw Criteo/Avazu file with a trained run's peer or peer ensemble.

  python -m mlctr.predict --workdir=RUN --raw=FILE --out=PRED.csv [--peer=NAME | --ensemble]

The run's config.json names its prepared dataset, whose vocabularies encode the raw
file (values unseen in training map to each field's OOV id); the run's best weights
(RUN/best, checked against their checksums) score it. Before scoring, the dataset is
compared with the one the run was trained on (RUN/dataset.json): a dataset prepared
again since (other rows, another protocol) is refused, naming what differs.

Output CSV: `row,label,prob`, one line per scored row in file order; `row` is the row's
1-based line number in the raw file (as in error messages), so with `--skip_bad_rows`
every prediction still points at its input line. Label is empty for an unlabeled file.
Next to it, `PRED.csv.json` records what was scored: the run, the peer, rows scored and
rows skipped by reason. Bad input exits 1 with one line naming the file, line and
column (see mlctr/data/errors.py); `--skip_bad_rows` skips and counts bad rows instead.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
import flax.errors
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlctr import atomic
from mlctr.run import checkpoint
from mlctr import mutual
from mlctr import peer_groups
from mlctr.run import inputs
from mlctr.data.errors import DataError
from mlctr.data.prepare.encode import encode_raw
from mlctr.data.reader import PreparedDataset

FLAGS = flags.FLAGS


def _define_flags():
    """The CLI's flags, defined only when run as a program: importing this module (the
    study does, for `load_run` and `peer_probabilities`) leaves the process's flags as
    they are (experiments define their own --workdir)."""
    flags.DEFINE_string("workdir", None, "A finished run directory (config.json, best/).")
    flags.DEFINE_string("raw", None, "Raw file to score (the run's dataset format; .gz ok).")
    flags.DEFINE_string("out", None, "Output CSV.")
    flags.DEFINE_string("peer", "", "Peer to score with (default: the ensemble).")
    flags.DEFINE_bool("ensemble", False, "Average the probabilities of all peers.")
    flags.DEFINE_bool("skip_bad_rows", False, "Skip (and count) bad rows instead of failing.")
    flags.DEFINE_integer("batch_size", 16384, "Scoring batch size.")
    flags.DEFINE_bool("allow_unverified", False,
                      "Score with a best/ that has no checksum manifest (a run from before "
                      "checksums): refused otherwise, since its damage cannot be detected.")


class PredictError(Exception):
    """The run, its dataset or the output path cannot be used; one line saying why."""


@dataclasses.dataclass
class Predictions:
    """Scores of the good rows of a raw file.

    Attributes:
        probs: float64 [n] click probabilities.
        labels: float32 [n] labels (NaN for an unlabeled file).
        rows: int64 [n] 1-based line number in the raw file of each scored row.
        skipped: bad rows skipped, by reason (empty unless skip_bad_rows).
    """

    probs: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    skipped: collections.Counter


def _read_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise PredictError(f"{workdir}: no such run directory")
    if not os.path.exists(path):
        raise PredictError(f"{path} not found: is {workdir} a run directory?")
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise PredictError(f"{path}: unreadable run config ({e})") from None


def check_dataset(workdir: str, dataset, data_dir: str) -> None:
    """Refuses a dataset other than the one the run was trained on, naming what differs.

    Runs written before dataset.json existed are not compared here; a dataset of other
    shapes still fails when the weights are applied (`predict_file`).
    """
    path = os.path.join(workdir, inputs.DATASET_RECORD)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            trained = json.load(f)
    except (OSError, ValueError) as e:
        raise PredictError(f"{path}: unreadable dataset record ({e})") from None
    now = inputs.dataset_fingerprint(dataset)
    # A per-process run records every process's train rows and sources (lists); one
    # process's copy, which predict opens, is checked on what all copies share.
    differences = inputs.fingerprint_differences(
        {k: v for k, v in trained.items() if not isinstance(v, list)}, now)
    if differences:
        raise PredictError(
            f"the dataset at {data_dir} is not the one run {workdir} was trained on "
            f"({'; '.join(differences)}): it was prepared again since; score with the run's "
            "own dataset or train on this one")


def _scoring_dataset_dir(config, data_dir: str) -> str:
    """The prepared dataset that scores a run's rows: `data_dir`, or for a run whose
    processes each prepared their own rows (`inputs.is_per_process`) process 0's
    copy, whose hashed ids, fields and eval rows every process's copy shares."""
    if not inputs.is_per_process(config):
        return data_dir
    counts = [c for c in inputs.process_counts(data_dir)
              if os.path.isdir(inputs.process_dir(data_dir, 0, c))]
    if len(counts) != 1:
        found = [os.path.basename(inputs.process_dir(data_dir, 0, c)) for c in counts]
        raise PredictError(
            f"{data_dir}: a {config.data.dataset} run with hashed ids keeps one dataset per "
            f"process (process_<i>_of_<P>/); found {len(found)} of process 0 "
            f"({', '.join(found) or 'none'})")
    return inputs.process_dir(data_dir, 0, counts[0])


def load_run(workdir: str, *, allow_unverified: bool = False):
    """(config, peers, params, batch_stats, data_dir) of a finished run.

    `allow_unverified`: accept a best/ without a checksum manifest (refused otherwise).

    Raises:
      PredictError: not a run directory, or its dataset changed since training.
      mlctr.data.errors.DataError: the run's dataset is missing or damaged.
      checkpoint.CheckpointError: best/ is missing, truncated or fails its checksums.
    """

    config = _read_config(workdir)
    data_dir = _scoring_dataset_dir(config, inputs.dataset_dir(config, workdir))
    dataset = PreparedDataset(data_dir)
    check_dataset(workdir, dataset, data_dir)
    peers = peer_groups.build_peers(config.peers, config.models, vocab_size=dataset.vocab_size,
                               num_fields=dataset.num_fields,
                               qr_layout=peer_groups.qr_layout(config, dataset))
    weights = checkpoint.load_peer_weights(workdir, list(peers.names),
                                           allow_unverified=allow_unverified,
                                           allow_hint="--allow_unverified")
    params, batch_stats = jax.tree_util.tree_map(jnp.asarray,
                                                 peer_groups.stack_peer_variables(peers, weights))
    return config, peers, params, batch_stats, data_dir


def predict_file(workdir: str, raw: str, *, peer: str = "", skip_bad_rows: bool = False,
                 batch_size: int = 16384, allow_unverified: bool = False) -> Predictions:
    """Click probabilities of every good row of `raw`.

    Args:
      workdir: the run directory.
      raw: the raw file.
      peer: a peer name, or '' for the ensemble (mean of the peers' probabilities).
      skip_bad_rows: skip (and count) bad rows instead of raising DataError.
      batch_size: rows scored per call (the last batch is padded).
      allow_unverified: score with a best/ that has no checksum manifest.
    """
    if batch_size < 1:
        raise PredictError(f"--batch_size must be >= 1 (got {batch_size})")
    config, peers, params, batch_stats, data_dir = load_run(
        workdir, allow_unverified=allow_unverified)
    if peer and peer not in peers.names:
        raise PredictError(f"run {workdir} has no peer {peer!r}; peers: {list(peers.names)}")
    ids, labels, rows, skipped = encode_raw(data_dir, raw, skip_bad_rows=skip_bad_rows,
                                            with_line_numbers=True)
    try:
        probs = peer_probabilities(peers, params, batch_stats, np.asarray(ids, np.int32),
                                   batch_size=batch_size,
                                   peer_execution=config.mutual.peer_execution)
    except flax.errors.ScopeParamShapeError as e:
        raise PredictError(f"the weights in {workdir}/{checkpoint.BEST_DIR} do not fit the "
                           f"dataset at {data_dir} ({str(e).splitlines()[0]}): it is not "
                           "the dataset the run was trained on") from None
    return Predictions(probs[peers.names.index(peer)] if peer else probs.mean(axis=0), labels,
                       np.asarray(rows, np.int64), collections.Counter(skipped))


def peer_probabilities(peers: peer_groups.Peers, params, batch_stats, ids: np.ndarray, *,
                       batch_size: int, peer_execution: str) -> np.ndarray:
    """Each peer's click probabilities of encoded rows, in batches of one shape.

    Args:
      peers: the run's peers (`peer_groups.build_peers`); params, batch_stats: their stacked
        variables (as `load_run` returns them).
      ids: int [n, fields] encoded rows.
      batch_size: rows per call; the last batch is padded with id 0 (and its padding
        dropped), so one compiled function scores every batch.
      peer_execution: config.mutual.peer_execution of the run.

    Returns:
      float64 [peers, n], in `peers.names` order.
    """
    predict_fn = mutual.make_predict_fn(peers, peer_execution=peer_execution)
    chunks = [np.zeros((len(peers.names), 0))]
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        padded = np.zeros((batch_size, ids.shape[1]), ids.dtype)
        padded[:len(chunk)] = chunk
        logits = np.asarray(predict_fn(params, batch_stats, jnp.asarray(padded)))[:, :len(chunk)]
        chunks.append(1.0 / (1.0 + np.exp(-logits.astype(np.float64))))
    return np.concatenate(chunks, axis=1)


def check_output(path: str) -> None:
    """Refuses an output path that cannot be written, before any scoring is done."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise PredictError(f"--out={path} is a directory; give a file name, e.g. {path}/pred.csv")
    if not os.path.isdir(directory):
        raise PredictError(f"--out={path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise PredictError(f"--out={path}: directory {directory} is not writable")


def write_outputs(path: str, predictions: Predictions, summary: dict) -> None:
    """Writes the CSV and its `<path>.json` summary, each through a fresh temporary
    (`mlctr.atomic`): a link planted under any name beside `path` is never followed."""
    with atomic.replacing(path) as f:  # never a half-written CSV under the final name
        f.write("row,label,prob\n")
        for row, label, p in zip(predictions.rows, predictions.labels, predictions.probs):
            f.write(f"{row},{'' if np.isnan(label) else int(label)},{p:.7f}\n")
    atomic.write_json(path + ".json", summary, indent=1)


def _run(out: str) -> str:
    check_output(out)
    predictions = predict_file(FLAGS.workdir, FLAGS.raw, peer=FLAGS.peer,
                               skip_bad_rows=FLAGS.skip_bad_rows, batch_size=FLAGS.batch_size,
                               allow_unverified=FLAGS.allow_unverified)
    skipped = int(sum(predictions.skipped.values()))
    summary = {"workdir": os.path.abspath(FLAGS.workdir), "raw": os.path.abspath(FLAGS.raw),
               "scored_with": FLAGS.peer or "ensemble", "rows_scored": len(predictions.probs),
               "rows_skipped": skipped,
               "skipped_by_reason": dict(sorted(predictions.skipped.items()))}
    try:
        write_outputs(out, predictions, summary)
    except OSError as e:
        raise PredictError(f"cannot write {out}: {e.strerror or e}") from None
    message = f"wrote {len(predictions.probs)} predictions ({summary['scored_with']}) to {out}"
    if skipped:
        reasons = ", ".join(f"{k} {v}" for k, v in summary["skipped_by_reason"].items())
        message += f"; skipped {skipped} bad rows ({reasons}), counts in {out}.json"
    return message


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("workdir", "raw", "out"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    if FLAGS.peer and FLAGS.ensemble:
        raise app.UsageError("--peer and --ensemble are exclusive")
    try:
        print(_run(FLAGS.out))
    except (DataError, PredictError, checkpoint.CheckpointError) as e:
        print(f"mlctr.predict: error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # an input that cannot be read (permissions): the file, the reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"mlctr.predict: error: cannot read {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
