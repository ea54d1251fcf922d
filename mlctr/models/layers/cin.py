"""Compressed Interaction Network (xDeepFM, Lian et al., KDD 2018), as FuxiCTR
``CompressedInteractionNet``.

``X^0 = e`` [B, F, D]. Layer k: ``Z = einsum('bhd,bmd->bhmd', X^0, X^{k-1})`` reshaped to
[B, F*H_{k-1}, D] (index ``h * H_{k-1} + m``), then a width-1 Conv1d over the channel axis
(= Linear F*H_{k-1} -> H_k with bias, xavier_normal / zeros, no activation), giving X^k
[B, H_k, D]. Each X^k is sum-pooled over D; the pooled vectors are concatenated and a Linear
maps them to one logit. FuxiCTR keeps every layer's full output (no split-half).

Implementation: the same math, embedding-dim-major: X^k is kept as [B, D, H_k] and Z is
built directly as [B, D, F*H_{k-1}], the layout the Linear contracts, so neither Z nor its
equally large gradient is ever transposed, and the batch dims (b, d) lead, as batched
matmuls want them.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.mlp import Linear


class CompressedInteractionNet(nn.Module):
    """[B, F, D] -> logit [B]."""

    cin_hidden_units: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
        x0 = feature_emb.astype(self.dtype).transpose(0, 2, 1)  # [B, D, F]
        batch, dim, _ = x0.shape
        x = x0
        pooled = []
        for i, units in enumerate(self.cin_hidden_units):
            # Z as [B, D, F*H_{k-1}], channel index h * H_{k-1} + m.
            z = jnp.einsum('bdh,bdm->bdhm', x0, x).reshape(batch, dim, -1)
            # Conv1d(kernel_size=1) over channels == Linear on the channel axis.
            x = Linear(units, dtype=self.dtype, name=f'cin_layer_{i}')(z)  # [B, D, H_k]
            pooled.append(jnp.sum(x, axis=1))
        return Linear(1, dtype=self.dtype, name='fc')(jnp.concatenate(pooled, axis=-1))[:, 0]
