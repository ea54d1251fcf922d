"""xDeepFM (Lian et al., KDD 2018), as FuxiCTR ``xDeepFM``.

``logit = LR(ids) + CIN(e) + DNN(flatten(e))``: first-order term without bias, the CIN's own
output Linear (with bias) and, if ``dnn_hidden_units`` is non-empty, a DNN ending in a Linear
to one unit.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.cin import CompressedInteractionNet
from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm
from mlctr.models.layers.mlp import MLPBlock


class xDeepFM(nn.Module):  # pylint: disable=invalid-name
    """xDeepFM. FuxiCTR v1 (used by BARS) called ``cin_hidden_units`` ``cin_layer_units``."""

    vocab_size: int
    num_fields: int
    embedding_dim: int = 16
    dnn_hidden_units: Sequence[int] = (1000, 1000, 1000, 1000, 1000)
    cin_hidden_units: Sequence[int] = (64, 64, 64)
    net_dropout: float = 0.2
    batch_norm: bool = False
    embedding_regularizer: float = 1e-4
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        linear_logit = LinearTerm(self.vocab_size, use_bias=False, dtype=self.dtype,
                                  name='linear')(ids)
        feature_emb = FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                       name='embedding')(ids)
        logit = linear_logit + CompressedInteractionNet(self.cin_hidden_units, dtype=self.dtype,
                                                        name='cin')(feature_emb)
        if self.dnn_hidden_units:
            logit = logit + MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm,
                                     output_dim=1, dtype=self.dtype, name='dnn')(
                                         feature_emb.reshape(ids.shape[0], -1), train=train)[:, 0]
        return logit.astype(jnp.float32)
