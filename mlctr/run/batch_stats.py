"""Batch-norm statistics that belong to the weights evaluated ("precise BN").

A train step normalises each batch-norm layer with the batch's own mean and variance;
evaluation uses the running statistics, an exponential average (momentum 0.9) that the
train steps update. Those describe earlier weights, and where a layer's input variance is
far below batch norm's epsilon they do not describe the network at all: eval mode then
computes another function than the one trained. That made FiBiNET with batch norm
saturate after a finetune's learning-rate jump (the reproduction and its
numbers: docs/reliability.md, "What made FiBiNET saturate").

So before each evaluation every training peer's statistics are recomputed from its
current weights: the equal-weight mean, over `train.precise_bn_batches` train batches,
of each batch's statistics in train mode (fvcore's `update_bn_stats`; Wu & Johnson 2021,
"Rethinking 'Batch' in BatchNorm", sec. 3). Stopped (frozen) peers keep theirs; peers
without batch norm are untouched and pay nothing.
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
