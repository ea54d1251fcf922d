"""FinalMLP (Mao et al., AAAI 2023, "FinalMLP: An Enhanced Two-Stream MLP Model for CTR
Prediction"), as FuxiCTR ``FinalMLP``.

``e = flatten(embed(ids))``; with ``use_fs`` each stream sees its own feature-selection gate,
``e1 = g1 * e``, ``e2 = g2 * e`` (``layers.final.FeatureSelectionGate``), else ``e1 = e2 = e``;
``logit = Aggregation(MLP1(e1), MLP2(e2))``, the multi-head bilinear fusion
(``layers.final.InteractionAggregation``). The MLPs have no output layer. FuxiCTR's
``fs1_context`` / ``fs2_context`` (fields whose embeddings feed the gates) are not supported:
every BARS run leaves them empty, the case implemented here.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import EmbeddingModel, flatten
from mlctr.models.layers.final import FeatureSelectionGate, InteractionAggregation
from mlctr.models.layers.mlp import MLPBlock


class FinalMLP(EmbeddingModel):
    """FinalMLP; defaults are BARS Criteo_x4_001."""

    mlp1_hidden_units: Sequence[int] = (1000, 1000, 1000, 1000, 1000)
    mlp1_dropout: float = 0.2
    mlp1_batch_norm: bool = False
    mlp2_hidden_units: Sequence[int] = (500,)
    mlp2_dropout: float = 0.1
    mlp2_batch_norm: bool = False
    use_fs: bool = False
    fs_hidden_units: Sequence[int] = (1000,)
    num_heads: int = 50

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        flat_emb = flatten(self.embed(ids))
        stream1 = stream2 = flat_emb
        if self.use_fs:
            width = flat_emb.shape[-1]
            stream1 = flat_emb * FeatureSelectionGate(
                width, self.embedding_dim, self.fs_hidden_units, dtype=self.dtype,
                name='fs_gate1')().astype(flat_emb.dtype)
            stream2 = flat_emb * FeatureSelectionGate(
                width, self.embedding_dim, self.fs_hidden_units, dtype=self.dtype,
                name='fs_gate2')().astype(flat_emb.dtype)
        out1 = MLPBlock(self.mlp1_hidden_units, self.mlp1_dropout, self.mlp1_batch_norm,
                        dtype=self.dtype, name='mlp1')(stream1, train=train)
        out2 = MLPBlock(self.mlp2_hidden_units, self.mlp2_dropout, self.mlp2_batch_norm,
                        dtype=self.dtype, name='mlp2')(stream2, train=train)
        return InteractionAggregation(self.num_heads, dtype=self.dtype, name='fusion')(
            out1, out2).astype(jnp.float32)
