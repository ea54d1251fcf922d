"""Dropout whose mask is computed once per step, with the same bits as flax's ``nn.Dropout``.

Why: under ``jax.grad`` the backward pass needs the forward mask, and XLA fuses the cheap
Threefry bit generation into both the forward and the backward select, so each dropout layer
would generate its random words twice per step. Passing the mask through ``sqrt`` (exact on
0 and 1), which XLA counts as expensive and does not duplicate, makes it one buffer that both
passes read (an ``optimization_barrier`` does not: XLA:CPU removes barriers before fusion).
Same keys, bits, outputs and gradients as ``nn.Dropout`` (tested); only the compiled program
differs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same attributes, same random bits) with the mask materialised once.

    The class keeps flax's name ``Dropout`` so auto-named instances are ``Dropout_<i>`` and
    ``make_rng`` derives the same keys as ``nn.Dropout`` in the same place would.
    """

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        keep_prob = 1.0 - self.rate
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            shape[dim] = 1
        keep = jax.random.bernoulli(rng, p=keep_prob, shape=shape)
        # sqrt is exact on 0 and 1, and XLA treats it as expensive, so it will not fuse (and
        # so duplicate) it, nor the bit generation behind it, into the two consumers.
        mask = jnp.sqrt(keep.astype(jnp.float32)) > 0
        mask = jnp.broadcast_to(mask, inputs.shape)
        return lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
