"""AutoInt / AutoInt+ (Song et al., CIKM 2019), as FuxiCTR ``AutoInt``.

``attention_layers`` stacked multi-head self-attention layers over the field embeddings
(first layer embedding_dim -> attention_dim, the rest attention_dim -> attention_dim, dropout
``net_dropout`` on the attention weights, residual, ReLU), flattened, then a Linear to one
logit. With non-empty ``dnn_hidden_units`` a DNN on ``flatten(e)`` is added (AutoInt+); with
``use_wide`` a first-order term without bias is added.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.attention import MultiHeadSelfAttention
from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm
from mlctr.models.layers.mlp import Linear, MLPBlock


class AutoInt(nn.Module):
    """AutoInt (AutoInt+ with a DNN)."""

    vocab_size: int
    num_fields: int
    embedding_dim: int = 16
    dnn_hidden_units: Sequence[int] = ()
    net_dropout: float = 0.0
    batch_norm: bool = False
    attention_layers: int = 5
    num_heads: int = 1
    attention_dim: int = 64
    use_residual: bool = True
    use_scale: bool = False
    layer_norm: bool = False
    use_wide: bool = False
    embedding_regularizer: float = 1e-5
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        attention_out = feature_emb
        for i in range(self.attention_layers):
            attention_out = MultiHeadSelfAttention(
                self.attention_dim, self.num_heads, self.net_dropout, self.use_residual,
                self.use_scale, self.layer_norm, dtype=self.dtype,
                name=f'self_attention_{i}')(attention_out, train=train)
        logit = Linear(1, dtype=self.dtype, name='fc')(
            attention_out.reshape(ids.shape[0], -1))[:, 0]
        if self.dnn_hidden_units:
            logit = logit + MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm,
                                     output_dim=1, dtype=self.dtype, name='dnn')(
                                         feature_emb.reshape(ids.shape[0], -1), train=train)[:, 0]
        if self.use_wide:
            logit = logit + LinearTerm(self.vocab_size, use_bias=False, dtype=self.dtype,
                                       name='linear')(ids)
        return logit.astype(jnp.float32)
