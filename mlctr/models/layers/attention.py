"""Multi-head self-attention over fields (AutoInt, Song et al., CIKM 2019), as FuxiCTR
``MultiHeadSelfAttention`` + ``ScaledDotProductAttention``.

Per layer: ``Q, K, V = X W_q, X W_k, X W_v`` (Linear without bias, input_dim ->
attention_dim), split into ``num_heads`` heads of ``attention_dim / num_heads``;
``A = softmax(Q K^T [/ sqrt(head_dim) if use_scale])`` over the key fields, dropout on A,
``O = A V`` with heads concatenated. With ``use_residual``: ``O += X W_res`` (W_res Linear
without bias, only when input_dim != attention_dim; otherwise ``O += X``). Optional layer
norm, then ReLU. All Linear weights xavier_normal.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlctr.models.layers.mlp import Linear
from mlctr.models.layers.dropout import Dropout


class MultiHeadSelfAttention(nn.Module):
    """[B, F, input_dim] -> [B, F, attention_dim]."""

    attention_dim: int
    num_heads: int = 1
    dropout_rate: float = 0.0
    use_residual: bool = True
    use_scale: bool = False
    layer_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.attention_dim % self.num_heads:
            raise ValueError(f'attention_dim={self.attention_dim} is not divisible by '
                             f'num_heads={self.num_heads}')
        x = x.astype(self.dtype)
        batch, num_fields, input_dim = x.shape
        head_dim = self.attention_dim // self.num_heads

        def heads(name):
            proj = Linear(self.attention_dim, use_bias=False, dtype=self.dtype, name=name)(x)
            return proj.reshape(batch, num_fields, self.num_heads, head_dim)

        query, key, value = heads('W_q'), heads('W_k'), heads('W_v')
        scores = jnp.einsum('bqhd,bkhd->bhqk', query, key)
        if self.use_scale:
            scores = scores / jnp.sqrt(jnp.asarray(head_dim, self.dtype))
        attention = jax.nn.softmax(scores, axis=-1)
        if self.dropout_rate > 0:
            attention = Dropout(self.dropout_rate)(attention, deterministic=not train)
        out = jnp.einsum('bhqk,bkhd->bqhd', attention, value).reshape(
            batch, num_fields, self.attention_dim)
        if self.use_residual:
            residual = x
            if input_dim != self.attention_dim:
                residual = Linear(self.attention_dim, use_bias=False, dtype=self.dtype,
                                  name='W_res')(x)
            out = out + residual
        if self.layer_norm:
            out = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32)(out)
        return nn.relu(out)
