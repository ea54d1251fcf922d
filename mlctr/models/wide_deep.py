"""Wide & Deep (Cheng et al., DLRS 2016), as FuxiCTR ``WideDeep``.

``logit = LR(ids) + DNN(flatten(e))``: the wide part is a first-order [vocab, 1] table without
bias (the DNN's output layer carries the bias); no hand-crafted cross features, as FuxiCTR
and BARS.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm
from mlctr.models.layers.mlp import MLPBlock


class WideDeep(nn.Module):
    """Wide & Deep. FuxiCTR calls ``dnn_hidden_units`` ``hidden_units``."""

    vocab_size: int
    num_fields: int
    embedding_dim: int = 16
    dnn_hidden_units: Sequence[int] = (1000, 1000, 1000, 1000, 1000)
    net_dropout: float = 0.2
    batch_norm: bool = False
    embedding_regularizer: float = 1e-5
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        linear_logit = LinearTerm(self.vocab_size, use_bias=False, dtype=self.dtype,
                                  name='linear')(ids)
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        dnn_logit = MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm,
                             output_dim=1, dtype=self.dtype, name='dnn')(
                                 feature_emb.reshape(ids.shape[0], -1), train=train)[:, 0]
        return (linear_logit + dnn_logit).astype(jnp.float32)
