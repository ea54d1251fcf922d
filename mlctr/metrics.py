"""Exact CTR metrics: ROC AUC (ties handled) and logloss, in numpy.

Both take optional per-example `weights`; evaluation passes the padding mask of
the last batch as weights so padded rows count zero times.

Single-class input: AUC is undefined when the (weighted) labels hold only one
class. `auc` then raises `ValueError` with a clear message rather than
returning a made-up value (sklearn raises too). Callers that monitor tiny
streams can catch it.
"""
from __future__ import annotations

import numpy as np

# sklearn's and FuxiCTR's clipping for logloss.
LOGLOSS_EPS = 1e-7


def _as_arrays(labels, scores, weights):
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if weights is None:
        weights = np.ones_like(labels)
    else:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if weights.shape != labels.shape:
            raise ValueError(f"weights {weights.shape} and labels {labels.shape} differ in shape")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    return labels, scores, weights


def auc(labels, scores, weights=None) -> float:
    """Exact area under the ROC curve (Mann-Whitney), ties counted as 1/2.

    Args:
        labels: 0/1 array [n].
        scores: any monotone score (logits or probabilities) [n].
        weights: optional non-negative weights [n] (e.g. an evaluation mask).

    Returns:
        AUC as a Python float.

    Raises:
        ValueError: if the weighted labels contain only one class.
    """
    labels, scores, weights = _as_arrays(labels, scores, weights)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(scores, kind="stable")
    scores, labels, weights = scores[order], labels[order], weights[order]
    pos_w = weights * labels
    neg_w = weights * (1.0 - labels)
    total_pos, total_neg = pos_w.sum(), neg_w.sum()
    if total_pos <= 0 or total_neg <= 0:
        raise ValueError(
                f"AUC is undefined for a single class (positive weight {total_pos:g}, "
                f"negative weight {total_neg:g})")
    # Group tied scores: each positive beats the negatives of all lower groups
    # and ties half of the negatives in its own group.
    group_start = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    pos_g = np.add.reduceat(pos_w, group_start)
    neg_g = np.add.reduceat(neg_w, group_start)
    neg_below = np.cumsum(neg_g) - neg_g
    return float(np.sum(pos_g * (neg_below + 0.5 * neg_g)) / (total_pos * total_neg))


def logloss(labels, probs, weights=None, eps: float = LOGLOSS_EPS) -> float:
    """Weighted mean binary cross-entropy of probabilities clipped to [eps, 1-eps]."""
    labels, probs, weights = _as_arrays(labels, probs, weights)
    if weights.sum() <= 0:
        raise ValueError("logloss of an empty (zero-weight) set is undefined")
    probs = np.clip(probs, eps, 1.0 - eps)
    losses = -(labels * np.log(probs) + (1.0 - labels) * np.log1p(-probs))
    return float(np.sum(weights * losses) / weights.sum())


def auc_and_logloss(labels, probs, weights=None) -> dict[str, float]:
    """Both metrics as a dict {'auc': ..., 'logloss': ...}."""
    return {"auc": auc(labels, probs, weights), "logloss": logloss(labels, probs, weights)}


def monitor_value(metrics: dict[str, float], monitor: str) -> float:
    """The scalar that early stopping maximises: 'auc' or 'auc-logloss' (BARS x4)."""
    if monitor == "auc":
        return metrics["auc"]
    if monitor == "auc-logloss":
        return metrics["auc"] - metrics["logloss"]
    raise ValueError(f"unknown monitor {monitor!r}; expected 'auc' or 'auc-logloss'")
