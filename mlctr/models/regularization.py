"""L2 penalty in FuxiCTR's convention (``BaseModel.regularization_loss``, ``lambda/2 * sum p^2``).

``penalty = embedding_regularizer / 2 * sum ||table||^2`` over every ``embedding_table`` leaf
(whole tables, every step) ``+ net_regularizer / 2 * sum ||p||^2`` over every other parameter
leaf: Linear kernels and biases, batch-norm scale and bias, the first-order bias, cross-layer
biases and the custom tensors (bilinear ``W``, CrossNetMix ``U/V/C``, outer-product kernels).
FuxiCTR matches only parameters named ``weight``/``bias`` and so skips some custom tensors;
one rule for all is simpler, and no BARS config is affected: they set ``net_regularizer = 0``
except for LR and FM, whose only such leaf is the first-order bias.
Batch statistics are not parameters and are never penalised.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_penalty(model: nn.Module, params) -> jnp.ndarray:
    """FuxiCTR-style L2 penalty of one model's parameters.

    Args:
      model: the model (reads ``embedding_regularizer`` and ``net_regularizer``; 0 when
        a user's model lacks the field).
      params: its ``params`` collection (with or without a top-level ``'params'`` key).

    Returns:
      float32 scalar.
    """
    if isinstance(params, dict) and set(params.keys()) == {'params'}:
        params = params['params']
    embedding_sq = jnp.zeros((), jnp.float32)
    net_sq = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = getattr(path[-1], 'key', None)
        sq = jnp.sum(jnp.square(leaf.astype(jnp.float32)))
        if name == 'embedding_table':
            embedding_sq = embedding_sq + sq
        else:
            net_sq = net_sq + sq
    penalty = jnp.zeros((), jnp.float32)
    # A user's model without these fields (mlctr/models/custom.py) has no L2 penalty.
    embedding_regularizer = getattr(model, 'embedding_regularizer', 0.0)
    net_regularizer = getattr(model, 'net_regularizer', 0.0)
    if embedding_regularizer:
        penalty = penalty + embedding_regularizer / 2 * embedding_sq
    if net_regularizer:
        penalty = penalty + net_regularizer / 2 * net_sq
    return penalty
