"""MLP block (FuxiCTR ``MLP_Block``) and the dense layer every model uses.

Per hidden layer, in FuxiCTR's order: Linear -> BatchNorm (if ``batch_norm``) -> ReLU ->
Dropout (if rate > 0). Optionally a final Linear to ``output_dim`` with no activation.
Linear weights are xavier_normal, biases zero (FuxiCTR ``reset_default_params``); batch norm
follows PyTorch ``BatchNorm1d`` defaults (momentum 0.1 torch = 0.9 flax, eps 1e-5; scale 1,
bias 0). One small difference: flax's running variance averages the biased batch variance,
torch's the unbiased one (a factor n/(n-1), ~1.0001 at batch 10000); training is identical.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers import initializers
from mlctr.models.layers.dropout import Dropout


def Linear(features: int, *, use_bias: bool = True, dtype: Any = jnp.float32,
           name: Optional[str] = None) -> nn.Dense:
    """``nn.Linear`` as FuxiCTR initialises it: xavier_normal kernel, zero bias, float32 params."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=initializers.xavier_normal(),
                    bias_init=nn.initializers.zeros_init(), name=name)


class MLPBlock(nn.Module):
    """Stack of hidden layers, optionally followed by a linear output layer.

    Attributes:
      hidden_units: width of each hidden layer (may be empty).
      dropout_rate: dropout after each hidden layer's activation (``net_dropout``).
      batch_norm: batch norm after each hidden Linear, before the activation.
      output_dim: if set, a final Linear to this width (no activation).
      dtype: compute dtype.
    """

    hidden_units: Sequence[int]
    dropout_rate: float = 0.0
    batch_norm: bool = False
    output_dim: Optional[int] = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = x.astype(self.dtype)
        for i, units in enumerate(self.hidden_units):
            x = Linear(units, dtype=self.dtype, name=f'dense_{i}')(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train,
                                 momentum=initializers.BATCH_NORM_MOMENTUM,
                                 epsilon=initializers.BATCH_NORM_EPSILON,
                                 dtype=self.dtype, param_dtype=jnp.float32,
                                 name=f'batch_norm_{i}')(x)
            x = nn.relu(x)
            if self.dropout_rate > 0:
                x = Dropout(self.dropout_rate)(x, deterministic=not train)
        if self.output_dim is not None:
            x = Linear(self.output_dim, dtype=self.dtype, name='output')(x)
        return x
