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
from scipy import special

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


# A probability this close to 0 or 1 is "saturated": its logit is beyond +-13.8, and one
# wrong label costs a logloss of 13.8 or more.
SATURATION_MARGIN = 1e-6


def prediction_health(names, logits: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    """Per peer: the fraction of saturated predictions and logloss / a constant's logloss.

    The constant predictor (the split's click rate for every row) is the floor any trained
    model must beat; a ratio far above 1 means the predictions are broken, not weak.

    Args:
      names: the peers, in the order of `logits`' first axis.
      logits: [N, n] logits of every peer on the split; labels: [n] 0/1.

    Returns:
      {peer: {"saturated": fraction in [0, 1], "logloss_ratio": float}}.
    """
    labels = np.asarray(labels, np.float64)
    rate = float(np.clip(labels.mean(), 1e-7, 1 - 1e-7))
    constant = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    probs = special.expit(logits.astype(np.float64))  # no overflow warning when saturated
    out = {}
    for k, name in enumerate(names):
        p = probs[k]
        saturated = float(np.mean((p < SATURATION_MARGIN) | (p > 1 - SATURATION_MARGIN)))
        logloss = metrics_lib.logloss(labels, p)
        out[name] = {"saturated": saturated, "logloss_ratio": float(logloss / constant)}
    return out


def unhealthy(health: dict, max_saturated: float, max_logloss_ratio: float) -> str | None:
    """Why a peer's predictions are broken (one phrase), or None when they are not.

    A limit of 0 switches its check off."""
    reasons = []
    if max_saturated > 0 and health["saturated"] >= max_saturated:
        reasons.append(f"{100 * health['saturated']:.1f}% of its predictions saturated "
                       f"(p < {SATURATION_MARGIN:g} or > 1 - {SATURATION_MARGIN:g})")
    if max_logloss_ratio > 0 and health["logloss_ratio"] >= max_logloss_ratio:
        reasons.append(f"logloss {health['logloss_ratio']:.1f}x a constant predictor's")
    return " and ".join(reasons) or None
