"""Deep & Cross Network (Wang et al., ADKDD 2017), as FuxiCTR ``DCN``.

``x0 = flatten(e)``; cross network ``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l`` beside a DNN on
``x0`` (no output layer); ``logit = Linear([x_L, dnn(x0)] -> 1)``. With empty
``dnn_hidden_units`` the model is the cross network alone.
"""

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel, flatten
from mlctr.models.layers.cross import CrossNet
from mlctr.models.layers.mlp import Linear


class DCN(DNNModel):
    """DCN (v1); defaults are BARS Criteo_x4_001."""

    num_cross_layers: int = 4

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        flat_emb = flatten(self.embed(ids))
        final = [CrossNet(self.num_cross_layers, dtype=self.dtype, name='cross_net')(flat_emb)]
        if self.dnn_hidden_units:
            final.append(self.dnn(flat_emb, train=train, output_dim=None))
        logit = Linear(1, dtype=self.dtype, name='fc')(jnp.concatenate(final, axis=-1))[:, 0]
        return logit.astype(jnp.float32)
