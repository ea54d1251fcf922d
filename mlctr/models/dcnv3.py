"""DCNv3 (Li et al. 2024, "DCNv3: Towards Next Generation Deep Cross Network for CTR
Prediction"; FCN in its later version), as FuxiCTR ``DCNv3``.

Multi-head embeddings: the table is ``embedding_dim * num_heads`` wide; each field's row is
cut into ``num_heads`` pieces of ``embedding_dim``, and head h's input is
``[first halves of all fields' pieces, second halves]`` [F * embedding_dim] (FuxiCTR
``MultiHeadFeatureEmbedding``; ``multihead_inputs``). Two cross networks with self-mask
(``layers.cross.SelfMaskCrossNet``) run on every head, each ending in a Linear to one logit
per head, averaged over heads:
  * deep: the exponential cross network (ECN), ``z_d``;
  * shallow: the linear cross network (LCN), ``z_s``;
``logit = (z_d + z_s) / 2``. Tri-BCE: in training the model adds
``w_d BCE(z_d) + w_s BCE(z_s)``, ``w_k = max(0, BCE(z_k) - BCE(logit))``, to the BCE of its
logit, through mlctr/models/auxiliary.py (``auxiliary.tri_bce``).
"""

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models import auxiliary
from mlctr.models.base import EmbeddingModel
from mlctr.models.layers.cross import SelfMaskCrossNet
from mlctr.models.layers.mlp import Linear


def multihead_inputs(feature_emb: jnp.ndarray, num_heads: int) -> jnp.ndarray:
    """[B, F, D * H] embeddings -> per-head inputs [B, H, F * D]: head h takes piece h of
    every field, and lays out the first halves of all fields' pieces, then the second halves."""
    batch, num_fields, width = feature_emb.shape
    dim = width // num_heads
    heads = feature_emb.reshape(batch, num_fields, num_heads, dim).transpose(0, 2, 1, 3)
    first, second = jnp.split(heads, 2, axis=-1)  # [B, H, F, D/2] each
    return jnp.concatenate([first.reshape(batch, num_heads, -1),
                            second.reshape(batch, num_heads, -1)], axis=-1)


class DCNv3(EmbeddingModel):
    """DCNv3; defaults are the authors' Criteo_x4_001 run (BARS has no DCNv3 run)."""

    embedding_regularizer: float = 1e-5
    num_deep_cross_layers: int = 4
    num_shallow_cross_layers: int = 5
    deep_net_dropout: float = 0.1
    shallow_net_dropout: float = 0.2
    layer_norm: bool = True
    batch_norm: bool = False
    num_heads: int = 1

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        if self.embedding_dim % 2:
            raise ValueError(f'DCNv3 splits each embedding in halves: embedding_dim must be '
                             f'even, got {self.embedding_dim}')
        inputs = multihead_inputs(self.embed(ids, self.embedding_dim * self.num_heads),
                                  self.num_heads)
        logits = {}
        for name, exponential, layers, dropout in (
                ('deep', True, self.num_deep_cross_layers, self.deep_net_dropout),
                ('shallow', False, self.num_shallow_cross_layers, self.shallow_net_dropout)):
            out = SelfMaskCrossNet(layers, exponential, dropout, self.layer_norm,
                                   self.batch_norm, dtype=self.dtype,
                                   name=f'{name}_cross_net')(inputs, train=train)
            logits[name] = jnp.mean(Linear(1, dtype=self.dtype, name=f'{name}_fc')(out)[..., 0],
                                    axis=1).astype(jnp.float32)
            auxiliary.sow_logits(self, f'{name}_logit', logits[name])
        return 0.5 * (logits['deep'] + logits['shallow'])

    def auxiliary_loss(self, logits, aux_logits, labels):
        """Tri-BCE's sub-network terms (``auxiliary.tri_bce``)."""
        return auxiliary.tri_bce(logits, [aux_logits['deep_logit'], aux_logits['shallow_logit']],
                                 labels)
