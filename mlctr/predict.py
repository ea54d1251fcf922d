"""Scores a raw Criteo/Avazu file with a trained run's peer or peer ensemble.

  python -m mlctr.predict --workdir=RUN --raw=FILE --out=PRED.csv [--peer=NAME | --ensemble]

The run's config.json names its prepared dataset, whose vocabularies encode
the raw file (values unseen in training map to each field's OOV id); the
run's best weights (RUN/best) score it. Output CSV: `row,label,prob` in file
order (label empty for an unlabeled file). Bad input exits non-zero with one
line naming the file, line and column (see mlctr/data/errors.py);
`--skip_bad_rows` skips and counts bad rows instead.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlctr import checkpoint
from mlctr import mutual
from mlctr.data.errors import DataError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run directory (config.json, best/).")
flags.DEFINE_string("raw", None, "Raw file to score (the run's dataset format; .gz ok).")
flags.DEFINE_string("out", None, "Output CSV.")
flags.DEFINE_string("peer", "", "Peer to score with (default: the ensemble).")
flags.DEFINE_bool("ensemble", False, "Average the probabilities of all peers.")
flags.DEFINE_bool("skip_bad_rows", False, "Skip (and count) bad rows instead of failing.")
flags.DEFINE_integer("batch_size", 16384, "Scoring batch size.")


def load_run(workdir: str):
    """(config, peers, params, batch_stats) of a finished run."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} a run directory?")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    from mlctr.data.reader import PreparedDataset
    dataset = PreparedDataset(config.data.data_dir)
    peers = mutual.build_peers(config.peers, config.models, vocab_size=dataset.vocab_size,
                               num_fields=dataset.num_fields)
    weights = checkpoint.load_peer_weights(workdir, list(peers.names))
    params, batch_stats = jax.tree_util.tree_map(jnp.asarray,
                                                 mutual.stack_peer_variables(peers, weights))
    return config, peers, params, batch_stats


def predict_file(workdir: str, raw: str, *, peer: str = "", skip_bad_rows: bool = False,
                 batch_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Click probabilities of every row of `raw`: (probs [n], labels [n]).

    Args:
      workdir: the run directory.
      raw: the raw file.
      peer: a peer name, or '' for the ensemble (mean of the peers' probabilities).
      skip_bad_rows: skip bad rows instead of raising DataError.
      batch_size: rows scored per call (the last batch is padded).
    """
    from mlctr.data.prepare import encode_raw

    config, peers, params, batch_stats = load_run(workdir)
    if peer and peer not in peers.names:
        raise ValueError(f"run {workdir} has no peer {peer!r}; peers: {list(peers.names)}")
    ids, labels = encode_raw(config.data.data_dir, raw, skip_bad_rows=skip_bad_rows)
    predict_fn = mutual.make_predict_fn(peers, peer_execution=config.mutual.peer_execution)
    probs = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        padded = np.zeros((batch_size, ids.shape[1]), np.int32)
        padded[:len(chunk)] = chunk
        logits = np.asarray(predict_fn(params, batch_stats, jnp.asarray(padded)))[:, :len(chunk)]
        p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        probs.append(p[peers.names.index(peer)] if peer else p.mean(axis=0))
    return (np.concatenate(probs) if probs else np.zeros(0)), labels


def write_csv(path: str, probs: np.ndarray, labels: np.ndarray):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("row,label,prob\n")
        for k, (label, p) in enumerate(zip(labels, probs)):
            f.write(f"{k},{'' if np.isnan(label) else int(label)},{p:.7f}\n")
    os.replace(tmp, path)  # never a half-written CSV under the final name


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("workdir", "raw", "out"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    if FLAGS.peer and FLAGS.ensemble:
        raise app.UsageError("--peer and --ensemble are exclusive")
    try:
        probs, labels = predict_file(FLAGS.workdir, FLAGS.raw, peer=FLAGS.peer,
                                     skip_bad_rows=FLAGS.skip_bad_rows, batch_size=FLAGS.batch_size)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    write_csv(FLAGS.out, probs, labels)
    print(f"wrote {len(probs)} predictions ({FLAGS.peer or 'ensemble'}) to {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
