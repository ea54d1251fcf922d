"""Feature embedding: one concatenated table over all fields, looked up by global ids.

Every field's vocabulary is a contiguous block of rows of a single table; the data pipeline
adds each field's offset (``field_offsets``) so that ``ids[b, f]`` is a *global* row index.
A single table keeps the parameter pytree tiny and lets the sparse-update trainer gather the
unique rows of a batch and run ``model.clone(vocab_size=K)`` on them: the forward pass touches
the table ONLY through ``jnp.take(table, ids, axis=0)``.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mlctr.models.layers import initializers


def field_offsets(field_vocab_sizes: Sequence[int]) -> np.ndarray:
    """Row offset of each field's block in the concatenated table.

    Args:
      field_vocab_sizes: number of rows (including OOV/padding) of each field.

    Returns:
      int64 array [F]: ``offsets[f] = sum(field_vocab_sizes[:f])``; add it to per-field ids.
    """
    sizes = np.asarray(field_vocab_sizes, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


class FeatureEmbedding(nn.Module):
    """Embedding lookup of global feature ids.

    Param ``embedding_table`` [vocab_size, embedding_dim], float32, initialised
    normal(std=1e-4) as FuxiCTR's ``embedding_initializer``. FuxiCTR additionally zeroes a
    padding row per field; we have no padding rows (OOV ids are ordinary rows).

    Attributes:
      vocab_size: total rows over all fields.
      embedding_dim: width of each row (1 for the first-order/linear weights).
      dtype: compute dtype the looked-up rows are cast to.
    """

    vocab_size: int
    embedding_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:
        """Looks up ``ids`` int [B, F] -> [B, F, embedding_dim] in ``dtype``."""
        table = self.param('embedding_table', initializers.embedding_normal(),
                           (self.vocab_size, self.embedding_dim), jnp.float32)
        # 'clip' rather than the default 'fill' (NaN for out-of-range ids): the same rows for
        # every valid id, without a per-element bounds select. Ids come from a feature map
        # (mlctr.data), in range by construction; the sparse step's are slots.
        return jnp.take(table, ids, axis=0, mode='clip').astype(self.dtype)


class LinearTerm(nn.Module):
    """First-order term ``sum_f w[ids[:, f]] (+ bias)``: FuxiCTR's ``LogisticRegression`` block.

    The weights are a [vocab_size, 1] ``FeatureEmbedding`` (FuxiCTR uses an embedding of
    dimension 1 too, initialised like every embedding: normal(std=1e-4)); the bias starts at 0.

    Returns [B] in ``dtype``.
    """

    vocab_size: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:
        weights = FeatureEmbedding(self.vocab_size, 1, dtype=self.dtype, name='embedding')(ids)
        out = jnp.sum(weights[..., 0], axis=-1)
        if self.use_bias:
            bias = self.param('bias', nn.initializers.zeros_init(), (), jnp.float32)
            out = out + bias.astype(self.dtype)
        return out
