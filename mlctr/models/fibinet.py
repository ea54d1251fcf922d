"""FiBiNET (Huang et al., RecSys 2019), as FuxiCTR ``FiBiNET``.

``p = Bilinear_1(e)``, ``q = Bilinear_2(SENET(e))`` (two independent bilinear layers, each
[B, P, D]); ``logit = LR(ids) + DNN(flatten([p, q]))`` where LR is a first-order term
*without* bias (the DNN's output layer carries the bias), as FuxiCTR.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.bilinear import BilinearInteraction
from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm
from mlctr.models.layers.mlp import MLPBlock
from mlctr.models.layers.senet import SqueezeExcitation


class FiBiNET(nn.Module):
    """FiBiNET. FuxiCTR calls ``dnn_hidden_units`` ``hidden_units``."""

    vocab_size: int
    num_fields: int
    embedding_dim: int = 16
    dnn_hidden_units: Sequence[int] = (2000, 2000, 2000)
    net_dropout: float = 0.0
    batch_norm: bool = False
    reduction_ratio: float = 3
    bilinear_type: str = 'field_interaction'
    embedding_regularizer: float = 1e-6
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        senet_emb = SqueezeExcitation(self.reduction_ratio, dtype=self.dtype, name='senet')(
            feature_emb)
        bilinear_p = BilinearInteraction(self.bilinear_type, dtype=self.dtype,
                                         name='bilinear_raw')(feature_emb)
        bilinear_q = BilinearInteraction(self.bilinear_type, dtype=self.dtype,
                                         name='bilinear_senet')(senet_emb)
        # Flatten each before concatenating (same order): one concat of all pair blocks.
        batch = ids.shape[0]
        comb = jnp.concatenate([bilinear_p.reshape(batch, -1), bilinear_q.reshape(batch, -1)], axis=1)
        dnn_logit = MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm,
                             output_dim=1, dtype=self.dtype, name='dnn')(comb, train=train)[:, 0]
        linear_logit = LinearTerm(self.vocab_size, use_bias=False, dtype=self.dtype,
                                  name='linear')(ids)
        return (linear_logit + dnn_logit).astype(jnp.float32)
