"""Product-based Neural Network (Qu et al., ICDM 2016), as FuxiCTR ``PNN``.

``dense_input = [flatten(e), products(e)]`` -> DNN -> 1 logit, where ``products`` are the
F*(F-1)/2 pairwise inner products (IPNN, ``product_type="inner"``, the BARS model) or
kernel outer products (OPNN, ``product_type="outer"``; see ``layers/product.py`` -- FuxiCTR
implements only the inner product). No first-order term, as FuxiCTR.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.embedding import FeatureEmbedding
from mlctr.models.layers.mlp import MLPBlock
from mlctr.models.layers.product import OuterProduct, inner_product

PRODUCT_TYPES = ('inner', 'outer')


class PNN(nn.Module):
    """PNN. FuxiCTR calls ``dnn_hidden_units`` ``hidden_units``."""

    vocab_size: int
    num_fields: int
    embedding_dim: int = 16
    dnn_hidden_units: Sequence[int] = (1000, 1000)
    net_dropout: float = 0.2
    batch_norm: bool = False
    product_type: str = 'inner'
    embedding_regularizer: float = 1e-5
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        if self.product_type == 'inner':
            products = inner_product(feature_emb)
        elif self.product_type == 'outer':
            products = OuterProduct(dtype=self.dtype, name='outer_product')(feature_emb)
        else:
            raise ValueError(f'product_type must be one of {PRODUCT_TYPES}, got {self.product_type!r}')
        dense_input = jnp.concatenate([feature_emb.reshape(ids.shape[0], -1), products], axis=-1)
        logit = MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm, output_dim=1,
                         dtype=self.dtype, name='dnn')(dense_input, train=train)[:, 0]
        return logit.astype(jnp.float32)


class IPNN(PNN):
    """Registry alias ``ipnn``: PNN with inner products (the default)."""

    product_type: str = 'inner'


class OPNN(PNN):
    """Registry alias ``opnn``: PNN with kernel outer products."""

    product_type: str = 'outer'
