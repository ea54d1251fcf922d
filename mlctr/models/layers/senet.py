"""Squeeze-and-Excitation over fields (FiBiNET, Huang et al., RecSys 2019), as FuxiCTR
``SqueezeExcitation``.

``Z = mean_d(e)`` [B, F]; ``A = ReLU(W2 ReLU(W1 Z))`` with ``W1: F -> max(1, int(F / r))`` and
``W2: -> F``, both Linear without bias (xavier_normal), ReLU as FuxiCTR's default
``excitation_activation``; output ``V = e * A[..., None]``.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.mlp import Linear


def senet_reduced_size(num_fields: int, reduction_ratio: float) -> int:
    """FuxiCTR: ``max(1, int(num_fields / reduction_ratio))``."""
    return max(1, int(num_fields / reduction_ratio))


class SqueezeExcitation(nn.Module):
    """[B, F, D] -> [B, F, D] re-weighted field embeddings."""

    reduction_ratio: float = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
        feature_emb = feature_emb.astype(self.dtype)
        num_fields = feature_emb.shape[1]
        z = jnp.mean(feature_emb, axis=-1)
        a = nn.relu(Linear(senet_reduced_size(num_fields, self.reduction_ratio), use_bias=False,
                           dtype=self.dtype, name='squeeze')(z))
        a = nn.relu(Linear(num_fields, use_bias=False, dtype=self.dtype, name='excitation')(a))
        return feature_emb * a[..., None]
