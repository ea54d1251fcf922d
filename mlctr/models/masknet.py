"""MaskNet (Wang, She & Zhang, DLP-KDD 2021), as FuxiCTR ``MaskNet``.

``e`` [B, F, D] the field embeddings, ``v_emb = flatten(e)``; ``v_hidden = flatten(LN_f(e))``
with a layer norm per field when ``emb_layernorm``, else ``v_emb``. Every MaskBlock's
instance-guided mask is computed from ``v_emb`` (``layers/mask.py``).
  * ``SerialMaskNet``: blocks of widths ``dnn_hidden_units`` in a chain, the first masking
    ``v_hidden``, each next one the previous output; ``logit = fc(last output)``.
  * ``ParallelMaskNet``: ``parallel_num_blocks`` blocks of width ``parallel_block_dim``
    each masking ``v_hidden``; ``logit = DNN(concat(outputs))`` with hidden layers
    ``dnn_hidden_units`` (FuxiCTR ``MLP_Block``, dropout ``net_dropout``, no batch norm).
No first-order term (FuxiCTR has none). ``net_layernorm``: the blocks' layer norm.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import EmbeddingModel, flatten
from mlctr.models.layers.mask import FieldLayerNorm, MaskBlock
from mlctr.models.layers.mlp import Linear, MLPBlock

MODEL_TYPES = ('SerialMaskNet', 'ParallelMaskNet')


class MaskNet(EmbeddingModel):
    """MaskNet, serial or parallel; defaults are BARS Criteo_x4_001 (ParallelMaskNet)."""

    dnn_hidden_units: Sequence[int] = (1000, 1000, 1000, 1000, 1000)
    net_dropout: float = 0.3
    model_type: str = 'ParallelMaskNet'
    parallel_num_blocks: int = 2
    parallel_block_dim: int = 500
    reduction_ratio: float = 0.1
    emb_layernorm: bool = False
    net_layernorm: bool = False

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f'model_type must be one of {MODEL_TYPES}, got {self.model_type!r}')
        feature_emb = self.embed(ids)
        v_emb = flatten(feature_emb)
        v_hidden = (flatten(FieldLayerNorm(dtype=self.dtype, name='emb_norm')(feature_emb))
                    if self.emb_layernorm else v_emb)

        def block(width, name):
            return MaskBlock(width, self.reduction_ratio, self.net_dropout, self.net_layernorm,
                             dtype=self.dtype, name=name)

        if self.model_type == 'SerialMaskNet':
            out = v_hidden
            for i, width in enumerate(self.dnn_hidden_units):
                out = block(width, f'mask_block_{i}')(v_emb, out, train=train)
            logit = Linear(1, dtype=self.dtype, name='fc')(out)
        else:
            outputs = [block(self.parallel_block_dim, f'mask_block_{i}')(v_emb, v_hidden,
                                                                          train=train)
                       for i in range(self.parallel_num_blocks)]
            logit = MLPBlock(self.dnn_hidden_units, self.net_dropout, False, output_dim=1,
                             dtype=self.dtype, name='dnn')(
                                 jnp.concatenate(outputs, axis=-1), train=train)
        return logit[:, 0].astype(jnp.float32)
