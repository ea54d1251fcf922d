"""FiBiNET (Huang et al., RecSys 2019), as FuxiCTR ``FiBiNET``.

``p = Bilinear_1(e)``, ``q = Bilinear_2(SENET(e))`` (two independent bilinear layers, each
[B, P, D]); ``logit = LR(ids) + DNN(flatten([p, q]))`` where LR is a first-order term
*without* bias (the DNN's output layer carries the bias), as FuxiCTR.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel, flatten
from mlctr.models.layers.bilinear import BilinearInteraction
from mlctr.models.layers.senet import SqueezeExcitation


class FiBiNET(DNNModel):
    """FiBiNET; defaults are BARS Criteo_x4_001."""

    embedding_regularizer: float = 1e-6
    dnn_hidden_units: Sequence[int] = (2000, 2000, 2000)
    net_dropout: float = 0.0
    reduction_ratio: float = 3
    bilinear_type: str = 'field_interaction'

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = self.embed(ids)
        senet_emb = SqueezeExcitation(self.reduction_ratio, dtype=self.dtype, name='senet')(
            feature_emb)
        bilinear_p = BilinearInteraction(self.bilinear_type, dtype=self.dtype,
                                         name='bilinear_raw')(feature_emb)
        bilinear_q = BilinearInteraction(self.bilinear_type, dtype=self.dtype,
                                         name='bilinear_senet')(senet_emb)
        # Flatten each before concatenating (same order): one concat of all pair blocks.
        comb = jnp.concatenate([flatten(bilinear_p), flatten(bilinear_q)], axis=1)
        dnn_logit = self.dnn(comb, train=train)
        return (self.first_order(ids, use_bias=False) + dnn_logit).astype(jnp.float32)
