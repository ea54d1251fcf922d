"""Evaluation of all peers on a split: gathered logits, then AUC/logloss per peer.

Each process reads only its slice of every evaluation batch; the logits of the whole
batch come back to every process and the padding is dropped by the mask, so every
example counts exactly once and all processes compute the same metrics (and so take
the same early-stopping decisions).
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from mlctr import metrics as metrics_lib
from mlctr import sharding


@functools.lru_cache(maxsize=16)
def _gathering_predict(predict_fn, mesh):
    """predict_fn over a global batch, returning (logits, labels, mask) on every process."""

    def predict(params, batch_stats, batch):
        return predict_fn(params, batch_stats, batch["ids"]), batch["label"], batch["mask"]

    return jax.jit(predict, out_shardings=sharding.replicated(mesh))


def predict_split(predict_fn, params, batch_stats, dataset, split: str, batch_size: int,
                  mesh=None):
    """Logits of every peer on a split: (logits [N, n], labels [n]), in split order.

    Args:
      predict_fn: from `train.build_run`.
      params, batch_stats: stacked peer variables (on `mesh`).
      dataset: the PreparedDataset.
      split: "valid" or "test".
      batch_size: global evaluation batch size (a multiple of the data axis).
      mesh: the device mesh; default: this process's first device.
    """
    mesh = mesh if mesh is not None else sharding.make_mesh(1, 1, jax.local_devices()[:1])
    index, count = sharding.process_batch_slice(mesh, batch_size)
    predict = _gathering_predict(predict_fn, mesh)
    all_logits, all_labels = [], []
    for local in dataset.eval_batches(split, batch_size, process_index=index, process_count=count):
        logits, labels, mask = jax.device_get(
            predict(params, batch_stats, sharding.global_batch(mesh, local, batch_size)))
        keep = mask > 0
        all_logits.append(logits[:, keep])
        all_labels.append(labels[keep])
    return np.concatenate(all_logits, axis=1), np.concatenate(all_labels)


def split_metrics(names, logits: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """AUC/logloss per peer and of the ensemble (mean of the peers' probabilities)."""
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    out = {name: metrics_lib.auc_and_logloss(labels, probs[k]) for k, name in enumerate(names)}
    if len(names) > 1:
        out["ensemble"] = metrics_lib.auc_and_logloss(labels, probs.mean(axis=0))
    return out
