"""Factorization Machine (Rendle, ICDM 2010), as FuxiCTR ``FM``.

``logit = bias + sum_f w[ids[:, f]] + sum_{i<j} <e_i, e_j>``: a [vocab, 1] first-order table
with bias and a [vocab, embedding_dim] factor table.
"""

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import EmbeddingModel
from mlctr.models.layers.fm import fm_product_sum


class FM(EmbeddingModel):
    """Second-order factorization machine.

    Defaults are BARS Criteo_x4_001; BARS (FuxiCTR v1) sets one ``regularizer`` for both
    ``embedding_regularizer`` and ``net_regularizer``.
    """

    net_regularizer: float = 1e-5

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        del train  # No dropout or batch norm.
        linear_logit = self.first_order(ids, use_bias=True)
        return (linear_logit + fm_product_sum(self.embed(ids))).astype(jnp.float32)
