"""EulerNet's Euler interaction layer (Tian et al., SIGIR 2023; FuxiCTR/the authors'
``EulerInteractionLayer``).

Features are complex vectors ``r + i p`` [B, F_in, D] (real and imaginary parts). By Euler's
formula each is ``lam e^{i theta}`` with log-modulus ``log lam = 0.5 log(r^2 + p^2)`` and
phase ``theta = atan2(p, r)``, and a product of powers of features is a *linear* map of those:
``prod_j z_j^{a_j} = exp(sum_j a_j log lam_j) e^{i sum_j a_j theta_j}``. So the layer learns
the interaction orders ``a`` [F_in, F_out] as weights (paper eq. 9-11):
  * explicit: ``log lam'_o = sum_j a_jo log lam_j + b_lam``, ``theta'_o = sum_j a_jo theta_j
    + b_theta`` (per embedding dimension; dropout ``ex_dropout`` on ``log lam`` and
    ``theta``), back to ``lam' cos theta'``, ``lam' sin theta'``;
  * implicit: ``relu(W r + b)``, ``relu(W p + b)`` over the flattened parts, one ``W``
    [F_in*D, F_out*D] for both (dropout ``im_dropout`` on its inputs);
  * out = implicit + explicit, per part; optionally a layer norm over D per part.
``1e-8`` inside the log keeps a zero feature finite, as the authors'.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlctr.models.layers.dropout import Dropout
from mlctr.models.layers.mask import layer_norm

LOG_MODULUS_EPSILON = 1e-8
# The authors' random init of the order vectors: softmax(normal / 0.01) over the inputs.
ORDER_INIT_TEMPERATURE = 0.01
# Their bias init: normal(0, 0.01) for b_lam and b_theta.
PHASE_BIAS_STD = 0.01


def initial_orders(key, shape, dtype=jnp.float32):
    """The authors' order init: the identity when F_in == F_out (each output starts as its
    input, first order); else each output a near one-hot softmax over the inputs."""
    num_in, num_out = shape
    if num_in == num_out:
        return jnp.eye(num_in, dtype=dtype)
    logits = jax.random.normal(key, shape, dtype) / ORDER_INIT_TEMPERATURE
    return jax.nn.softmax(logits, axis=0)


def torch_default_bias(fan_in: int):
    """PyTorch's default Linear bias init, uniform(+-1/sqrt(fan_in)): the authors' model
    initialises its layers after FuxiCTR's ``reset_parameters``, so their biases keep it."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class EulerInteraction(nn.Module):
    """One Euler interaction layer: (r, p) [B, F_in, D] -> (r', p') [B, num_outputs, D].

    Attributes:
      num_outputs: F_out, the complex features (learned orders) the layer outputs.
      ex_dropout: dropout on the explicit part's log-modulus and phase (``net_ex_dropout``).
      im_dropout: dropout on the implicit part's inputs (``net_im_dropout``).
      use_layer_norm: a layer norm over D on each output part (``layer_norm``).
      dtype: compute dtype.
    """

    num_outputs: int
    ex_dropout: float = 0.0
    im_dropout: float = 0.0
    use_layer_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, real: jnp.ndarray, imag: jnp.ndarray, *, train: bool):
        batch, num_in, dim = real.shape
        num_out = self.num_outputs
        real, imag = real.astype(self.dtype), imag.astype(self.dtype)
        orders = self.param('orders', initial_orders, (num_in, num_out), jnp.float32)
        bias_lam = self.param('bias_lam', nn.initializers.normal(PHASE_BIAS_STD),
                              (num_out, dim), jnp.float32)
        bias_theta = self.param('bias_theta', nn.initializers.normal(PHASE_BIAS_STD),
                                (num_out, dim), jnp.float32)

        def dropout(rate, x):
            return Dropout(rate)(x, deterministic=not train) if rate > 0 else x

        log_lam = dropout(self.ex_dropout,
                          0.5 * jnp.log(real ** 2 + imag ** 2 + LOG_MODULUS_EPSILON))
        theta = dropout(self.ex_dropout, jnp.arctan2(imag, real))
        orders = orders.astype(self.dtype)
        lam = jnp.exp(jnp.einsum('bid,io->bod', log_lam, orders) + bias_lam.astype(self.dtype))
        theta = jnp.einsum('bid,io->bod', theta, orders) + bias_theta.astype(self.dtype)

        implicit = nn.Dense(num_out * dim, dtype=self.dtype, param_dtype=jnp.float32,
                            kernel_init=nn.initializers.xavier_uniform(),
                            bias_init=torch_default_bias(num_in * dim), name='implicit')

        def implicit_part(x):
            x = dropout(self.im_dropout, x.reshape(batch, num_in * dim))
            return nn.relu(implicit(x)).reshape(batch, num_out, dim)

        out_real = implicit_part(real) + lam * jnp.cos(theta)
        out_imag = implicit_part(imag) + lam * jnp.sin(theta)
        if self.use_layer_norm:
            out_real = layer_norm('norm_real', self.dtype)(out_real)
            out_imag = layer_norm('norm_imag', self.dtype)(out_imag)
        return out_real, out_imag
