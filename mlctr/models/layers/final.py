"""The layers of FinalMLP (Mao et al., AAAI 2023) and FinalNet (Zhu et al., SIGIR 2023).

FinalMLP:
  * ``FeatureSelectionGate``: ``g = 2 * sigmoid(MLP(c))``, one gate per element of the
    flattened embeddings [F*D]. Without context fields (every BARS run), ``c`` is a learned
    vector of ``embedding_dim`` entries, zero-initialised as FuxiCTR's ``fs_ctx_bias``. The
    gate then is one [F*D] vector shared by all examples, computed once per batch.
    Consequence of that initialisation (FuxiCTR's too): the hidden ReLU layer starts at
    exactly 0, where the ReLU's derivative is 0, so only the output bias ever trains: the
    gate is ``2 * sigmoid(b)`` per element.
  * ``InteractionAggregation``: the multi-head bilinear fusion of the two streams,
    ``logit = w_x . x + w_y . y + sum_h x_h^T W_h y_h`` with ``x``, ``y`` split into
    ``num_heads`` heads. ``W`` is FuxiCTR's ``w_xy``, a [H * dx * dy, 1] tensor
    initialised xavier_normal with torch's fans for that shape (std sqrt(2 / (1 + H dx dy))),
    stored here as [H, dx, dy].
FinalNet:
  * ``FactorizedInteraction``: ``h = W x + b`` split in halves ``(h2, h1)``; ``concat``:
    ``[h2, h1 * h2]`` (width = the layer's width), ``sum``: ``h2 + h1 * h2`` (``W`` twice as
    wide). Each output is a linear term plus a product of two linear terms, a quadratic
    interaction, per layer.
  * ``FinalBlock``: factorized interaction layers, each followed by batch norm, the
    activation and dropout (FuxiCTR ``FinalBlock``; the MLP order).
  * ``FieldGate`` (FuxiCTR ``FeatureGating``): ``gates = Linear_F(e)`` along the field axis
    (for each embedding coordinate, a Linear from the F fields to F gates), weight zeros and
    bias ones so every gate starts at 1 (the authors' ``reset_custom_params``);
    ``concat``: ``[e, e * gates]`` [B, 2F, D], ``sum``: ``e + e * gates``.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers import initializers
from mlctr.models.layers.dropout import Dropout
from mlctr.models.layers.mlp import Linear, MLPBlock

RESIDUAL_TYPES = ('concat', 'sum')
ACTIVATIONS = ('relu', 'none')


class FeatureSelectionGate(nn.Module):
    """FinalMLP gate without context fields: [width] gate values, shared by the batch.

    Attributes:
      width: gate width (F * D, the flattened embeddings).
      context_dim: length of the learned context vector (``embedding_dim``).
      hidden_units: the gate MLP's hidden widths (``fs_hidden_units``).
    """

    width: int
    context_dim: int
    hidden_units: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        context = self.param('context', nn.initializers.zeros_init(), (1, self.context_dim),
                             jnp.float32)
        logits = MLPBlock(self.hidden_units, output_dim=self.width, dtype=self.dtype,
                          name='mlp')(context, train=False)
        return 2.0 * nn.sigmoid(logits[0])


class InteractionAggregation(nn.Module):
    """FinalMLP multi-head bilinear fusion of x [B, dx] and y [B, dy] into logits [B]."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
        heads = self.num_heads
        if x.shape[-1] % heads or y.shape[-1] % heads:
            raise ValueError(f'num_heads={heads} must divide both stream widths '
                             f'({x.shape[-1]}, {y.shape[-1]})')
        head_x, head_y = x.shape[-1] // heads, y.shape[-1] // heads
        std = (2.0 / (1 + heads * head_x * head_y)) ** 0.5
        w_xy = self.param('w_xy', initializers.normal(std), (heads, head_x, head_y),
                          jnp.float32).astype(self.dtype)
        x, y = x.astype(self.dtype), y.astype(self.dtype)
        linear = (Linear(1, dtype=self.dtype, name='w_x')(x)
                  + Linear(1, dtype=self.dtype, name='w_y')(y))[:, 0]
        bilinear = jnp.einsum('bhi,hij,bhj->b', x.reshape(-1, heads, head_x), w_xy,
                              y.reshape(-1, heads, head_y))
        return linear + bilinear


class FactorizedInteraction(nn.Module):
    """FinalNet factorized interaction layer: [B, in] -> [B, features]."""

    features: int
    residual_type: str = 'concat'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.residual_type not in RESIDUAL_TYPES:
            raise ValueError(f'residual_type must be one of {RESIDUAL_TYPES}, '
                             f'got {self.residual_type!r}')
        if self.residual_type == 'concat' and self.features % 2:
            raise ValueError(f'residual_type="concat" needs even widths, got {self.features}')
        width = self.features if self.residual_type == 'concat' else 2 * self.features
        h2, h1 = jnp.split(Linear(width, dtype=self.dtype, name='linear')(x), 2, axis=-1)
        if self.residual_type == 'concat':
            return jnp.concatenate([h2, h1 * h2], axis=-1)
        return h2 + h1 * h2


class FinalBlock(nn.Module):
    """FinalNet block: per layer factorized interaction -> batch norm -> activation ->
    dropout. Input [B, in], output [B, hidden_units[-1]]."""

    hidden_units: Sequence[int]
    dropout_rate: float = 0.0
    batch_norm: bool = True
    residual_type: str = 'concat'
    activation: str = 'relu'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f'activation must be one of {ACTIVATIONS}, got {self.activation!r}')
        x = x.astype(self.dtype)
        for i, units in enumerate(self.hidden_units):
            x = FactorizedInteraction(units, self.residual_type, dtype=self.dtype,
                                      name=f'layer_{i}')(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train,
                                 momentum=initializers.BATCH_NORM_MOMENTUM,
                                 epsilon=initializers.BATCH_NORM_EPSILON,
                                 dtype=self.dtype, param_dtype=jnp.float32,
                                 name=f'batch_norm_{i}')(x)
            if self.activation == 'relu':
                x = nn.relu(x)
            if self.dropout_rate > 0:
                x = Dropout(self.dropout_rate)(x, deterministic=not train)
        return x


class FieldGate(nn.Module):
    """FinalNet feature gating over fields: [B, F, D] -> [B, 2F, D] (concat) or [B, F, D]."""

    gate_residual: str = 'concat'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
        if self.gate_residual not in RESIDUAL_TYPES:
            raise ValueError(f'gate_residual must be one of {RESIDUAL_TYPES}, '
                             f'got {self.gate_residual!r}')
        num_fields = feature_emb.shape[1]
        feature_emb = feature_emb.astype(self.dtype)
        kernel = self.param('kernel', nn.initializers.zeros_init(), (num_fields, num_fields),
                            jnp.float32).astype(self.dtype)
        bias = self.param('bias', nn.initializers.ones_init(), (num_fields,),
                          jnp.float32).astype(self.dtype)
        gates = jnp.einsum('bfd,fg->bgd', feature_emb, kernel) + bias[None, :, None]
        if self.gate_residual == 'concat':
            return jnp.concatenate([feature_emb, feature_emb * gates], axis=1)
        return feature_emb + feature_emb * gates
