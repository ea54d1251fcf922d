"""Fields and building steps the models share, so that each model file holds only its own.

``CTRModel`` (input size, L2 weights, dtype, first-order term) < ``EmbeddingModel``
(+ ``embedding_dim``, the field embedding) < ``DNNModel`` (+ the DNN tower and its BARS
hyperparameters). The submodules are always named ``linear``, ``embedding`` and ``dnn``, so
parameter paths, and so checkpoints, agree across models. Defaults are the BARS
Criteo_x4_001 values most models share; a model redeclares a field to change its default.

Quotient-remainder embeddings (mlctr/models/qr.py) are a matter of these two steps alone:
with ``qr_combiner`` set, a model takes the table rows ``QRLayout.rows`` gives, [B, 2F]
(each field's quotient and remainder row), ``embed`` combines each field's two embeddings
into the usual [B, F, D] and ``first_order`` sums each field's two weights, so every model
above them runs unchanged.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models import qr
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
      qr_combiner: '' (ids are dataset ids [B, F]), or 'product' / 'sum': ids are
        quotient-remainder table rows [B, 2F] (``mlctr.models.qr.QRLayout.rows``) and
        ``vocab_size`` is the layout's ``num_rows``. Set from ``config.vocab``, not a
        hyperparameter of ``config.models``.
    """

    vocab_size: int
    num_fields: int
    embedding_regularizer: float = 1e-5
    net_regularizer: float = 0.0
    dtype: Any = jnp.float32
    qr_combiner: str = ''

    def _checked_ids(self, ids: jnp.ndarray) -> jnp.ndarray:
        """``ids``, refused in one line when QR table rows are not 2F per example."""
        if self.qr_combiner and ids.shape[-1] != 2 * self.num_fields:
            raise ValueError(f'{type(self).__name__} with qr_combiner={self.qr_combiner!r} '
                             f'takes 2 x {self.num_fields} table rows per example '
                             f'(mlctr.models.qr.QRLayout.rows), got ids of shape {ids.shape}')
        return ids

    def first_order(self, ids: jnp.ndarray, *, use_bias: bool) -> jnp.ndarray:
        """FuxiCTR's ``LogisticRegression`` term ``sum_f w[ids[:, f]] (+ bias)`` [B]: module
        ``linear``.

        With QR a field's weight is the *sum* of its quotient and remainder scalars, whatever
        ``qr_combiner``: the term sums all 2F looked-up weights. The sum keeps the term
        linear in its parameters, as logistic regression is (LR stays convex); a product
        of two scalars would make it bilinear, with a saddle at 0 right where the std-1e-4
        initialisation puts both factors.
        """
        return LinearTerm(self.vocab_size, use_bias=use_bias, dtype=self.dtype,
                          name='linear')(self._checked_ids(ids))


class EmbeddingModel(CTRModel):
    """A model over field embeddings: adds ``embedding_dim`` and the embedding lookup."""

    embedding_dim: int = 16

    def embed(self, ids: jnp.ndarray, width: Optional[int] = None) -> jnp.ndarray:
        """Field embeddings [B, F, embedding_dim] of ``ids`` [B, F] (with QR: of table rows
        [B, 2F], each field's two rows combined by ``qr.combine``): module ``embedding``.
        ``width``: the table's width when not ``embedding_dim`` (DCNv3's multi-head table)."""
        embeddings = FeatureEmbedding(self.vocab_size, width or self.embedding_dim,
                                      dtype=self.dtype, name='embedding')(self._checked_ids(ids))
        return qr.combine(embeddings, self.qr_combiner) if self.qr_combiner else embeddings


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
