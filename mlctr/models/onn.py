"""ONN, the operation-aware neural network (Yang et al., Neural Networks 2020; also NFFM),
as FuxiCTR ``ONN``.

Each value has F embeddings of ``embedding_dim``, one per operation (``layers/field_aware.py``):
its copy and one per other field for their inner product, so
``logit = DNN([flatten(copies), p_ij for i < j])``: F*D + F(F-1)/2 inputs. No first-order
term (FuxiCTR has none).

Memory: the table has ``vocab_size x F x embedding_dim`` entries, F times a plain model's
(FuxiCTR: F tables of [V, D]; here one table of [V, F*D], the same parameters). At the BARS
sizes (embedding 8; ids summed from the BARS logs' feature specs): Criteo_x4_001, 39 fields
x 910,747 ids, 1.06 GiB of float32 parameters, 4.2 GiB with their gradient and two Adam
moments; Avazu_x4_001, 24 fields x 3,750,999 ids, 2.7 GiB and 10.7 GiB (BARS logs
723,660,201 parameters). Each peer holds its own. A model whose tables
with gradient and Adam moments exceed the memory of one device (the host's on CPU) is
refused when it is built, in one line, rather than failing in the allocator.
"""

import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlctr.models import qr
from mlctr.models.base import DNNModel, flatten
from mlctr.models.layers.embedding import FeatureEmbedding
from mlctr.models.layers.field_aware import operation_aware_products

# Float32 copies of a table a training step holds: the parameters, their gradient, and
# Adam's two moments (dense Adam; the sparse optimisers hold fewer).
TRAINING_COPIES = 4


def device_memory_bytes() -> int:
    """Memory of one local device: its allocator limit on GPU/TPU, the host's RAM on CPU
    (XLA:CPU reports no memory stats)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if 'bytes_limit' in stats:
        return int(stats['bytes_limit'])
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


class ONN(DNNModel):
    """ONN; defaults are BARS Criteo_x4_001."""

    embedding_dim: int = 8
    dnn_hidden_units: Sequence[int] = (1000, 1000, 1000)
    net_dropout: float = 0.4

    def __post_init__(self):
        super().__post_init__()
        table_bytes = 4 * self.vocab_size * self.num_fields * self.embedding_dim
        available = device_memory_bytes()
        if TRAINING_COPIES * table_bytes > available:
            raise ValueError(
                f'ONN: {self.vocab_size:,} ids x {self.num_fields} fields x embedding_dim '
                f'{self.embedding_dim} is a {table_bytes / 2**30:.1f} GiB table, '
                f'{TRAINING_COPIES * table_bytes / 2**30:.1f} GiB with its gradient and Adam '
                f'moments, over the {available / 2**30:.1f} GiB of one device: lower '
                f'embedding_dim, cap the vocabulary (config.vocab.max_rows) or use QR '
                f'embeddings (config.vocab.qr_collisions)')

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        num_fields, dim = self.num_fields, self.embedding_dim
        rows = FeatureEmbedding(self.vocab_size, num_fields * dim, dtype=self.dtype,
                                name='embedding')(self._checked_ids(ids))
        if self.qr_combiner:
            rows = qr.combine(rows, self.qr_combiner)
        field_aware = rows.reshape(rows.shape[0], num_fields, num_fields, dim)
        dnn_input = jnp.concatenate([flatten(field_aware[:, :, 0]),
                                     operation_aware_products(field_aware)], axis=-1)
        return self.dnn(dnn_input, train=train).astype(jnp.float32)
