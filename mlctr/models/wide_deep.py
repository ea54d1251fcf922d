"""Wide & Deep (Cheng et al., DLRS 2016), as FuxiCTR ``WideDeep``.

``logit = LR(ids) + DNN(flatten(e))``: the wide part is a first-order [vocab, 1] table without
bias (the DNN's output layer carries the bias); no hand-crafted cross features, as FuxiCTR
and BARS.
"""

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel


class WideDeep(DNNModel):
    """Wide & Deep; the ``DNNModel`` defaults are its BARS Criteo_x4_001 values."""

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        linear_logit = self.first_order(ids, use_bias=False)
        dnn_logit = self.dnn(self.embed(ids), train=train)
        return (linear_logit + dnn_logit).astype(jnp.float32)
