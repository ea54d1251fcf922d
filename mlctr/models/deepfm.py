"""DeepFM (Guo et al., IJCAI 2017), as FuxiCTR ``DeepFM``.

``logit = LR(ids) + FM(e) + DNN(flatten(e))``: the first-order term is its own [vocab, 1]
table with a bias (FuxiCTR ``FactorizationMachine`` = ``LogisticRegression(use_bias=True)`` +
product-sum); the FM and the DNN share the [vocab, embedding_dim] table. The DNN ends in a
Linear to one unit (with bias).
"""

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel
from mlctr.models.layers.fm import fm_product_sum


class DeepFM(DNNModel):
    """DeepFM; the ``DNNModel`` defaults are its BARS Criteo_x4_001 values."""

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        linear_logit = self.first_order(ids, use_bias=True)
        feature_emb = self.embed(ids)
        logit = linear_logit + fm_product_sum(feature_emb) + self.dnn(feature_emb, train=train)
        return logit.astype(jnp.float32)
