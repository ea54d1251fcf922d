"""xDeepFM (Lian et al., KDD 2018), as FuxiCTR ``xDeepFM``.

``logit = LR(ids) + CIN(e) + DNN(flatten(e))``: first-order term without bias, the CIN's own
output Linear (with bias) and, if ``dnn_hidden_units`` is non-empty, a DNN ending in a Linear
to one unit.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel
from mlctr.models.layers.cin import CompressedInteractionNet


class xDeepFM(DNNModel):  # pylint: disable=invalid-name
    """xDeepFM; defaults are BARS Criteo_x4_001. FuxiCTR v1 (used by BARS) called
    ``cin_hidden_units`` ``cin_layer_units``."""

    embedding_regularizer: float = 1e-4
    cin_hidden_units: Sequence[int] = (64, 64, 64)

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = self.embed(ids)
        logit = self.first_order(ids, use_bias=False) + CompressedInteractionNet(
            self.cin_hidden_units, dtype=self.dtype, name='cin')(feature_emb)
        if self.dnn_hidden_units:
            logit = logit + self.dnn(feature_emb, train=train)
        return logit.astype(jnp.float32)
