"""Factorization Machine (Rendle, ICDM 2010), as FuxiCTR ``FM``.

``logit = bias + sum_f w[ids[:, f]] + sum_{i<j} <e_i, e_j>``: a [vocab, 1] first-order table
with bias and a [vocab, embedding_dim] factor table.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm
from mlctr.models.layers.fm import fm_product_sum


class FM(nn.Module):
    """Second-order factorization machine.

    Defaults are BARS Criteo_x4_001; BARS (FuxiCTR v1) sets one ``regularizer`` for both
    ``embedding_regularizer`` and ``net_regularizer``.
    """

    vocab_size: int
    num_fields: int
    embedding_dim: int = 16
    embedding_regularizer: float = 1e-5
    net_regularizer: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        del train  # No dropout or batch norm.
        linear_logit = LinearTerm(self.vocab_size, use_bias=True, dtype=self.dtype,
                                  name='linear')(ids)
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        return (linear_logit + fm_product_sum(feature_emb)).astype(jnp.float32)
