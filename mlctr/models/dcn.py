"""Deep & Cross Network (Wang et al., ADKDD 2017), as FuxiCTR ``DCN``.

``x0 = flatten(e)``; cross network ``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l`` beside a DNN on
``x0`` (no output layer); ``logit = Linear([x_L, dnn(x0)] -> 1)``. With empty
``dnn_hidden_units`` the model is the cross network alone.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.cross import CrossNet
from mlctr.models.layers.embedding import FeatureEmbedding
from mlctr.models.layers.mlp import Linear, MLPBlock


class DCN(nn.Module):
    """DCN (v1)."""

    vocab_size: int
    num_fields: int
    embedding_dim: int = 16
    dnn_hidden_units: Sequence[int] = (1000, 1000, 1000, 1000, 1000)
    net_dropout: float = 0.2
    batch_norm: bool = False
    num_cross_layers: int = 4
    embedding_regularizer: float = 1e-5
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        flat_emb = feature_emb.reshape(ids.shape[0], -1)
        final = [CrossNet(self.num_cross_layers, dtype=self.dtype, name='cross_net')(flat_emb)]
        if self.dnn_hidden_units:
            final.append(MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm,
                                  dtype=self.dtype, name='dnn')(flat_emb, train=train))
        logit = Linear(1, dtype=self.dtype, name='fc')(jnp.concatenate(final, axis=-1))[:, 0]
        return logit.astype(jnp.float32)
