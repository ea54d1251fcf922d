"""Factorization-machine second-order term (Rendle 2010), FuxiCTR ``InnerProductInteraction``
with ``output="product_sum"``.

``sum_{i<j} <e_i, e_j> = 0.5 * sum_d [(sum_i e_id)^2 - sum_i e_id^2]`` -- O(F*D) instead of
O(F^2*D).
"""

import flax.linen as nn
import jax.numpy as jnp


def fm_product_sum(feature_emb: jnp.ndarray) -> jnp.ndarray:
    """Sum of pairwise inner products of fields.

    Args:
      feature_emb: [B, F, D] field embeddings.

    Returns:
      [B] the FM interaction term.
    """
    square_of_sum = jnp.square(jnp.sum(feature_emb, axis=1))
    sum_of_square = jnp.sum(jnp.square(feature_emb), axis=1)
    return 0.5 * jnp.sum(square_of_sum - sum_of_square, axis=-1)


class FMInteraction(nn.Module):
    """Parameter-free module wrapper around :func:`fm_product_sum`."""

    @nn.compact
    def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
        return fm_product_sum(feature_emb)
