"""Logistic regression, as FuxiCTR ``LR``: ``logit = bias + sum_f w[ids[:, f]]``.

The weights are a [vocab_size, 1] ``embedding_table`` (normal std 1e-4), the bias starts at 0.
"""

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import CTRModel


class LR(CTRModel):
    """Logistic regression over one-hot fields.

    Defaults are BARS Criteo_x4_001; BARS (FuxiCTR v1) sets one ``regularizer`` for both
    ``embedding_regularizer`` and ``net_regularizer``.
    """

    embedding_regularizer: float = 1e-7
    net_regularizer: float = 1e-7

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        del train  # No dropout or batch norm.
        return self.first_order(ids, use_bias=True).astype(jnp.float32)
