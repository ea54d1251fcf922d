"""AutoInt / AutoInt+ (Song et al., CIKM 2019), as FuxiCTR ``AutoInt``.

``attention_layers`` stacked multi-head self-attention layers over the field embeddings
(first layer embedding_dim -> attention_dim, the rest attention_dim -> attention_dim, dropout
``net_dropout`` on the attention weights, residual, ReLU), flattened, then a Linear to one
logit. With non-empty ``dnn_hidden_units`` a DNN on ``flatten(e)`` is added (AutoInt+); with
``use_wide`` a first-order term without bias is added.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel, flatten
from mlctr.models.layers.attention import MultiHeadSelfAttention
from mlctr.models.layers.mlp import Linear


class AutoInt(DNNModel):
    """AutoInt (AutoInt+ with a DNN); defaults are BARS Criteo_x4_001 (no DNN)."""

    dnn_hidden_units: Sequence[int] = ()
    net_dropout: float = 0.0
    attention_layers: int = 5
    num_heads: int = 1
    attention_dim: int = 64
    use_residual: bool = True
    use_scale: bool = False
    layer_norm: bool = False
    use_wide: bool = False

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = self.embed(ids)
        attention_out = feature_emb
        for i in range(self.attention_layers):
            attention_out = MultiHeadSelfAttention(
                self.attention_dim, self.num_heads, self.net_dropout, self.use_residual,
                self.use_scale, self.layer_norm, dtype=self.dtype,
                name=f'self_attention_{i}')(attention_out, train=train)
        logit = Linear(1, dtype=self.dtype, name='fc')(flatten(attention_out))[:, 0]
        if self.dnn_hidden_units:
            logit = logit + self.dnn(feature_emb, train=train)
        if self.use_wide:
            logit = logit + self.first_order(ids, use_bias=False)
        return logit.astype(jnp.float32)
