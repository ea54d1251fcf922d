"""Product-based Neural Network (Qu et al., ICDM 2016), as FuxiCTR ``PNN``.

``dense_input = [flatten(e), products(e)]`` -> DNN -> 1 logit, where ``products`` are the
F*(F-1)/2 pairwise inner products (IPNN, ``product_type="inner"``, the BARS model) or
kernel outer products (OPNN, ``product_type="outer"``; see ``layers/product.py`` -- FuxiCTR
implements only the inner product). No first-order term, as FuxiCTR.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel, flatten
from mlctr.models.layers.product import OuterProduct, inner_product

PRODUCT_TYPES = ('inner', 'outer')


class PNN(DNNModel):
    """PNN; defaults are BARS Criteo_x4_001 (IPNN)."""

    dnn_hidden_units: Sequence[int] = (1000, 1000)
    product_type: str = 'inner'

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = self.embed(ids)
        if self.product_type == 'inner':
            products = inner_product(feature_emb)
        elif self.product_type == 'outer':
            products = OuterProduct(dtype=self.dtype, name='outer_product')(feature_emb)
        else:
            raise ValueError(
                f'product_type must be one of {PRODUCT_TYPES}, got {self.product_type!r}')
        dense_input = jnp.concatenate([flatten(feature_emb), products], axis=-1)
        return self.dnn(dense_input, train=train).astype(jnp.float32)


class IPNN(PNN):
    """Registry alias ``ipnn``: PNN with inner products (the default)."""

    product_type: str = 'inner'


class OPNN(PNN):
    """Registry alias ``opnn``: PNN with kernel outer products."""

    product_type: str = 'outer'
