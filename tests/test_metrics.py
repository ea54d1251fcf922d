"""Exact AUC / logloss (mlctr/metrics.py) against brute-force references."""
import itertools

import numpy as np
import pytest

from mlctr import metrics


def brute_force_auc(labels, scores, weights):
    """Sum over all (positive, negative) pairs: 1 if ordered, 1/2 if tied."""
    num = den = 0.0
    for i, j in itertools.product(range(len(labels)), repeat=2):
        if labels[i] == 1 and labels[j] == 0:
            w = weights[i] * weights[j]
            den += w
            num += w * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
    return num / den


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    n = 60
    labels = rng.integers(0, 2, n)
    scores = rng.integers(0, 6, n) / 5.0  # few distinct values: many ties
    weights = rng.integers(0, 3, n).astype(float)  # includes zero-weight (padding) rows
    assert metrics.auc(labels, scores, weights) == pytest.approx(
        brute_force_auc(labels, scores, weights), abs=1e-12)
    assert metrics.auc(labels, scores) == pytest.approx(
        brute_force_auc(labels, scores, np.ones(n)), abs=1e-12)


def test_auc_extremes():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert metrics.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_single_class_raises_clearly():
    with pytest.raises(ValueError, match="single class"):
        metrics.auc([1, 1, 1], [0.2, 0.4, 0.9])
    # Padding rows (weight 0) do not count as a class.
    with pytest.raises(ValueError, match="single class"):
        metrics.auc([1, 1, 0], [0.2, 0.4, 0.9], weights=[1, 1, 0])


def test_logloss_matches_definition_and_clips():
    labels = np.array([1, 0, 1, 0])
    probs = np.array([0.9, 0.2, 0.6, 0.4])
    expected = -np.mean([np.log(0.9), np.log(0.8), np.log(0.6), np.log(0.6)])
    assert metrics.logloss(labels, probs) == pytest.approx(expected, rel=1e-12)
    assert metrics.logloss(labels, probs, weights=[1, 1, 0, 0]) == pytest.approx(
        -np.mean([np.log(0.9), np.log(0.8)]), rel=1e-12)
    # A confident mistake is clipped at eps = 1e-7, not infinite.
    assert metrics.logloss([1], [0.0]) == pytest.approx(-np.log(1e-7), rel=1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="shape"):
        metrics.logloss([0, 1], [0.1])
    with pytest.raises(ValueError, match="monitor"):
        metrics.monitor_value({"auc": 0.7, "logloss": 0.5}, "accuracy")
    assert metrics.monitor_value({"auc": 0.7, "logloss": 0.5}, "auc-logloss") == pytest.approx(0.2)
