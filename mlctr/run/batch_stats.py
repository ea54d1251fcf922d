"""Batch-norm statistics that belong to the weights evaluated ("precise BN").

A train step normalises each batch-norm layer with the batch's own mean and variance;
evaluation uses the running statistics, an exponential average (momentum 0.9) that the
train steps update. Those running statistics describe *earlier* weights, and where a
layer's input variance is far below batch norm's epsilon (1e-5) they no longer
describe the network at all. That is what made FiBiNET (batch_norm = True) saturate
after a finetune's learning-rate jump (issue 25, item 8; measured on the ~10k real
Criteo rows in ../shared/data, FiBiNET with a 400x3 batch-norm DNN, embedding 10,
batch 128, finetune at lr 3e-4; docs/reliability.md has the numbers):

* the DNN's input (the bilinear interactions of embeddings initialised at std 1e-4)
  has a per-unit standard deviation of ~5e-6, a variance ~3e-11, six orders below the
  epsilon; train mode then divides by sqrt(eps) and only subtracts the batch mean;
* the running variance of the first layers is still the initial 1.0 decayed by
  0.9^steps (1.06e-3 = 0.9^65 in the checkpoint of step 65), and the running mean lags
  the pre-norm biases, which drift under Adam (batch norm makes their gradient ~0, and
  Adam normalises that noise into lr-sized steps);
* so eval mode is a different function from the one trained: 40 finetune steps in,
  the valid logloss with the running statistics was 12.56 with 100% of predictions
  saturated, while the same weights in train mode on the same rows gave 0.51 (and the
  train rows in eval mode 12.39: no overfitting, a statistics mismatch).

The fix: before each evaluation, each training peer's statistics are recomputed from
its current weights, as the equal-weight mean over `train.precise_bn_batches` train
batches of each batch's statistics in train mode (fvcore's `update_bn_stats`; Wu &
Johnson 2021, "Rethinking 'Batch' in BatchNorm", sec. 3). On the run above: valid
logloss 0.504 and AUC 0.7307 at that step, as in train mode. Stopped (frozen) peers
keep theirs. Peers without batch norm are untouched and pay nothing.
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterable

import jax
import jax.numpy as jnp

from mlctr.models.layers import initializers


def has_batch_norm(batch_stats) -> bool:
    """Whether any peer of the stacked state has batch-norm statistics."""
    return bool(jax.tree_util.tree_leaves(batch_stats))


def precise_batch_stats(stats_fn: Callable, params, batch_stats, batches: Iterable[dict],
                        num_batches: int,
                        momentum: float = initializers.BATCH_NORM_MOMENTUM):
    """Equal-weight mean of the per-batch statistics of `num_batches` train batches.

    Args:
      stats_fn: `mutual.make_batch_stats_fn(peers)`; it returns (1 - momentum) times each
        batch's statistics.
      params, batch_stats: the stacked peer variables (batch_stats gives the tree shape).
      batches: placed global train batches ({"ids": ...}); the first `num_batches` are used.
      num_batches: how many (>= 1).
      momentum: the models' batch-norm momentum (mlctr/models/layers/mlp.py).

    Returns:
      batch_stats of the same structure: each peer's statistics for its current weights.

    Raises:
      ValueError: the iterator yields no batch.
    """
    total, count = None, 0
    for batch in itertools.islice(batches, num_batches):
        stats = stats_fn(params, batch_stats, batch["ids"])
        total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
        count += 1
    if total is None:
        raise ValueError("no train batch to compute batch-norm statistics from")
    scale = 1.0 / (count * (1.0 - momentum))
    return jax.tree_util.tree_map(lambda t: t * scale, total)
