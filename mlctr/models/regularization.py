"""L2 penalty in FuxiCTR's convention (``BaseModel.regularization_loss``).

``penalty = embedding_regularizer / 2 * sum ||table||^2``  over every ``embedding_table`` leaf
          ``+ net_regularizer / 2 * sum ||p||^2``          over every other parameter leaf.

FuxiCTR computes ``lambda / p * ||param||_p^p`` with p=2, i.e. ``lambda/2 * sum(param^2)``,
over whole embedding tables every step (not only the rows of the batch).

Which leaves ``net_regularizer`` covers: every non-embedding leaf of ``params`` -- Linear
kernels and biases (as FuxiCTR), batch-norm scale/bias (FuxiCTR includes these too: they are
``weight``/``bias`` of a non-Embedding module), the linear term's global bias, cross-layer
biases, and custom tensors (bilinear ``W``, CrossNetMix ``U/V/C``, outer-product kernels).
FuxiCTR only matches parameters literally *named* ``weight``/``bias`` on their own module, so
it silently skips some custom tensors (``bilinear_W``, CrossNetMix's ``U_list``...). We
regularise all of them: one uniform rule, and BARS uses ``net_regularizer = 0`` for every
model we ship, so published configs are unaffected. Batch statistics are not parameters and
are never penalised.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_penalty(model: nn.Module, params) -> jnp.ndarray:
    """FuxiCTR-style L2 penalty of one model's parameters.

    Args:
      model: the model (reads ``embedding_regularizer`` and ``net_regularizer``).
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
    if model.embedding_regularizer:
        penalty = penalty + model.embedding_regularizer / 2 * embedding_sq
    if model.net_regularizer:
        penalty = penalty + model.net_regularizer / 2 * net_sq
    return penalty
