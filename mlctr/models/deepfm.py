"""DeepFM (Guo et al., IJCAI 2017), as FuxiCTR ``DeepFM``.

``logit = LR(ids) + FM(e) + DNN(flatten(e))``: the first-order term is its own [vocab, 1]
table with a bias (FuxiCTR ``FactorizationMachine`` = ``LogisticRegression(use_bias=True)`` +
product-sum); the FM and the DNN share the [vocab, embedding_dim] table. The DNN ends in a
Linear to one unit (with bias).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm
from mlctr.models.layers.fm import fm_product_sum
from mlctr.models.layers.mlp import MLPBlock


class DeepFM(nn.Module):
    """DeepFM. FuxiCTR calls ``dnn_hidden_units`` ``hidden_units``."""

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
        linear_logit = LinearTerm(self.vocab_size, use_bias=True, dtype=self.dtype,
                                  name='linear')(ids)
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        fm_logit = fm_product_sum(feature_emb)
        dnn_logit = MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm,
                             output_dim=1, dtype=self.dtype, name='dnn')(
                                 feature_emb.reshape(ids.shape[0], -1), train=train)[:, 0]
        return (linear_logit + fm_logit + dnn_logit).astype(jnp.float32)
