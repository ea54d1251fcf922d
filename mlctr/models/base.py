"""Fields and building steps the models share, so that each model file holds only its own.

``CTRModel`` (input size, L2 weights, dtype, first-order term) < ``EmbeddingModel``
(+ ``embedding_dim``, the field embedding) < ``DNNModel`` (+ the DNN tower and its BARS
hyperparameters). The submodules are always named ``linear``, ``embedding`` and ``dnn``, so
parameter paths, and so checkpoints, agree across models. Defaults are the BARS
Criteo_x4_001 values most models share; a model redeclares a field to change its default.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm
from mlctr.models.layers.mlp import MLPBlock


def flatten(x: jnp.ndarray) -> jnp.ndarray:
    """[B, ...] -> [B, -1], e.g. field embeddings [B, F, D] -> [B, F*D]."""
    return x.reshape(x.shape[0], -1)


class CTRModel(nn.Module):
    """Fields every model has; the first-order term.

    Attributes:
      vocab_size: rows of the concatenated embedding table (all fields).
      num_fields: number of feature fields F.
      embedding_regularizer: L2 weight of the embedding tables (FuxiCTR's convention).
      net_regularizer: L2 weight of every other parameter.
      dtype: compute dtype; parameters stay float32.
    """

    vocab_size: int
    num_fields: int
    embedding_regularizer: float = 1e-5
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32

    def first_order(self, ids: jnp.ndarray, *, use_bias: bool) -> jnp.ndarray:
        """FuxiCTR's ``LogisticRegression`` term ``sum_f w[ids[:, f]] (+ bias)`` [B]: module
        ``linear``."""
        return LinearTerm(self.vocab_size, use_bias=use_bias, dtype=self.dtype,
                          name='linear')(ids)


class EmbeddingModel(CTRModel):
    """A model over field embeddings: adds ``embedding_dim`` and the embedding lookup."""

    embedding_dim: int = 16

    def embed(self, ids: jnp.ndarray) -> jnp.ndarray:
        """Field embeddings [B, F, embedding_dim] of ``ids`` [B, F]: module ``embedding``."""
        return FeatureEmbedding(self.vocab_size, self.embedding_dim, dtype=self.dtype,
                                name='embedding')(ids)


class DNNModel(EmbeddingModel):
    """A model with a DNN tower (FuxiCTR ``MLP_Block``); FuxiCTR calls ``dnn_hidden_units``
    ``hidden_units``."""

    dnn_hidden_units: Sequence[int] = (1000, 1000, 1000, 1000, 1000)
    net_dropout: float = 0.2
    batch_norm: bool = False

    def dnn(self, inputs: jnp.ndarray, *, train: bool,
            output_dim: Optional[int] = 1) -> jnp.ndarray:
        """The tower on ``flatten(inputs)``: module ``dnn``.

        Args:
          inputs: [B, ...], flattened to [B, -1].
          train: dropout and batch statistics on.
          output_dim: width of the final Linear (no activation); ``1`` returns the logit [B];
            ``None``: no output layer, the last hidden layer [B, dnn_hidden_units[-1]].

        Returns:
          [B] for ``output_dim=1``, else [B, width].
        """
        out = MLPBlock(self.dnn_hidden_units, self.net_dropout, self.batch_norm,
                       output_dim=output_dim, dtype=self.dtype, name='dnn')(
                           flatten(inputs), train=train)
        return out[:, 0] if output_dim == 1 else out
