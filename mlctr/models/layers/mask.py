"""MaskNet's layers (Wang et al., DLP-KDD 2021): the instance-guided mask and the MaskBlock,
and the per-field layer norm of its embeddings. FuxiCTR counterparts: ``MaskBlock`` and
``MaskNet.emb_norm``.

Instance-guided mask (paper eq. 5-6): from the flattened embedding ``v_emb`` [B, F*D],
``mask = W2 relu(W1 v_emb + b1) + b2``: an aggregation layer of ``int(H * reduction_ratio)``
units, then a projection to the width H of what it masks. MaskBlock (eq. 7-9):
``out = dropout(relu(LN(W (mask * v_hidden))))`` with ``W`` bias-free (the layer norm's
shift replaces it); without ``layer_norm`` the LN step is skipped and ``W`` stays bias-free,
as FuxiCTR. Dropout after the activation is FuxiCTR's (``net_dropout``), not the paper's.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.dropout import Dropout
from mlctr.models.layers.mlp import Linear

# PyTorch's nn.LayerNorm default (flax's is 1e-6); scale 1 and bias 0 as both.
LAYER_NORM_EPSILON = 1e-5


def layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    """A LayerNorm over the last axis, initialised and epsilon'd as PyTorch's."""
    return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=dtype, param_dtype=jnp.float32,
                        name=name)


def mask_hidden_units(width: int, reduction_ratio: float) -> int:
    """Units of the mask's aggregation layer for a masked width: FuxiCTR's
    ``int(width * reduction_ratio)`` (truncation, not rounding)."""
    units = int(width * reduction_ratio)
    if units < 1:
        raise ValueError(f'reduction_ratio {reduction_ratio} leaves the instance-guided mask '
                         f'of a {width}-wide input no aggregation unit (int({width} x '
                         f'{reduction_ratio}) = 0)')
    return units


class MaskBlock(nn.Module):
    """Instance-guided mask of ``v_hidden`` from ``v_emb``, then a bias-free Linear,
    optional layer norm, ReLU and dropout.

    Attributes:
      output_dim: width of the block's output.
      reduction_ratio: aggregation units of the mask = int(width of v_hidden * ratio).
      dropout_rate: dropout after the ReLU (training only).
      use_layer_norm: layer norm between the Linear and the ReLU (``net_layernorm``).
      dtype: compute dtype.
    """

    output_dim: int
    reduction_ratio: float = 1.0
    dropout_rate: float = 0.0
    use_layer_norm: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, v_emb: jnp.ndarray, v_hidden: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: v_emb [B, M] (the mask's input), v_hidden [B, H]. Returns [B, output_dim]."""
        width = v_hidden.shape[-1]
        aggregated = nn.relu(Linear(mask_hidden_units(width, self.reduction_ratio),
                                    dtype=self.dtype, name='mask_aggregation')(v_emb))
        mask = Linear(width, dtype=self.dtype, name='mask_projection')(aggregated)
        out = Linear(self.output_dim, use_bias=False, dtype=self.dtype, name='hidden')(
            mask * v_hidden.astype(self.dtype))
        if self.use_layer_norm:
            out = layer_norm('layer_norm', self.dtype)(out)
        out = nn.relu(out)
        if self.dropout_rate > 0:
            out = Dropout(self.dropout_rate)(out, deterministic=not train)
        return out


class FieldLayerNorm(nn.Module):
    """A separate layer norm over each field's embedding (MaskNet's ``LN_EMB``).

    Params ``scale`` and ``bias`` [F, D] (1 and 0): field f's row is its LayerNorm's.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, embeddings: jnp.ndarray) -> jnp.ndarray:
        """Args: embeddings [B, F, D]. Returns [B, F, D] in ``dtype``."""
        shape = embeddings.shape[-2:]
        scale = self.param('scale', nn.initializers.ones_init(), shape, jnp.float32)
        bias = self.param('bias', nn.initializers.zeros_init(), shape, jnp.float32)
        x = embeddings.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        normed = (x - mean) * jnp.reciprocal(jnp.sqrt(variance + LAYER_NORM_EPSILON))
        return (normed * scale + bias).astype(self.dtype)
