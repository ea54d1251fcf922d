"""FinalNet (Zhu et al., SIGIR 2023, "FINAL: Factorized Interaction Layer for CTR
Prediction"), as FuxiCTR ``FinalNet``.

``e = embed(ids)`` [B, F, D]. Block 1: ``z1 = fc1(FinalBlock_1(flatten(g(e))))`` where ``g`` is
the field gate (``use_feature_gating``; ``layers.final.FieldGate``, concat residual: [B, 2F, D])
or the identity. ``block_type``:
  * ``1B``: ``logit = z1``;
  * ``2B``: block 2, ``z2 = fc2(FinalBlock_2(flatten(e)))``, and ``logit = (z1 + z2) / 2``;
    in training each block is also pulled towards the final prediction,
    ``BCE(z1, sg(p)) + BCE(z2, sg(p))`` with ``p = sigmoid(logit)`` a constant
    (FuxiCTR ``FinalNet.add_loss``), through mlctr/models/auxiliary.py.
``FinalBlock`` stacks factorized interaction layers (``layers.final``), each followed by
batch norm, the activation and dropout.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models import auxiliary
from mlctr.models.base import EmbeddingModel, flatten
from mlctr.models.layers.final import FieldGate, FinalBlock
from mlctr.models.layers.mlp import Linear

BLOCK_TYPES = ('1B', '2B')


class FinalNet(EmbeddingModel):
    """FinalNet 1B / 2B; defaults are BARS Criteo_x4_001."""

    block_type: str = '2B'
    batch_norm: bool = True
    use_feature_gating: bool = True
    block1_hidden_units: Sequence[int] = (1000, 1000, 1000)
    block1_hidden_activations: str = 'relu'
    block1_dropout: float = 0.4
    block2_hidden_units: Sequence[int] = (512,)
    block2_hidden_activations: str = 'relu'
    block2_dropout: float = 0.4
    residual_type: str = 'concat'

    def _block(self, index, units, activation, dropout, inputs, train):
        out = FinalBlock(units, dropout, self.batch_norm, self.residual_type, activation,
                         dtype=self.dtype, name=f'block{index}')(flatten(inputs), train=train)
        return Linear(1, dtype=self.dtype, name=f'fc{index}')(out)[:, 0].astype(jnp.float32)

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        if self.block_type not in BLOCK_TYPES:
            raise ValueError(f'block_type must be one of {BLOCK_TYPES}, got {self.block_type!r}')
        feature_emb = self.embed(ids)
        block1_in = (FieldGate('concat', dtype=self.dtype, name='feature_gating')(feature_emb)
                     if self.use_feature_gating else feature_emb)
        logit1 = self._block(1, self.block1_hidden_units, self.block1_hidden_activations,
                             self.block1_dropout, block1_in, train)
        if self.block_type == '1B':
            return logit1
        logit2 = self._block(2, self.block2_hidden_units, self.block2_hidden_activations,
                             self.block2_dropout, feature_emb, train)
        auxiliary.sow_logits(self, 'logit1', logit1)
        auxiliary.sow_logits(self, 'logit2', logit2)
        return 0.5 * (logit1 + logit2)

    def auxiliary_loss(self, logits, aux_logits, labels):
        """2B: each block's BCE against the final prediction (a constant); 1B: 0."""
        del labels  # the blocks' targets are the final prediction, not the labels
        if self.block_type == '1B':
            return jnp.zeros((), jnp.float32)
        return auxiliary.distillation_bce(logits, [aux_logits['logit1'], aux_logits['logit2']])
