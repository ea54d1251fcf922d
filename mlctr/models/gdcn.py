"""GDCN (Wang et al., CIKM 2023, "Towards Deeper, Lighter and Interpretable Cross Network for
CTR Prediction"), as FuxiCTR ``GDCN`` (stacked) and ``GDCNP`` (parallel).

``x0 = flatten(e)``; the gated cross network ``GCN`` (``layers.cross.GatedCrossNet``) is
DCN-V2's cross layer whose every element passes an information gate. ``model_structure``:
  * ``stacked`` (GDCN-S): ``DNN(GCN(x0))``, the DNN ending in its output Linear to one logit;
  * ``parallel`` (GDCN-P): ``fc([GCN(x0), DNN(x0)])``, the DNN without output layer;
  * ``crossnet_only``: ``fc(GCN(x0))`` (the paper's GCN alone).
FuxiCTR's field-wise embedding sizes (the paper's "field-level dimension optimisation") are
not used: every field has ``embedding_dim``, as in every mlctr model.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import DNNModel, flatten
from mlctr.models.layers.cross import GatedCrossNet
from mlctr.models.layers.mlp import Linear

MODEL_STRUCTURES = ('stacked', 'parallel', 'crossnet_only')


class GDCN(DNNModel):
    """GDCN-S / GDCN-P. BARS has no GDCN run: the defaults are FuxiCTR's ``GDCN_default``
    template (DNN 1024-512-256, 3 cross layers, no dropout, no batch norm, no L2) at the
    x4_001 embedding size 16, in the parallel structure."""

    embedding_regularizer: float = 0.0
    dnn_hidden_units: Sequence[int] = (1024, 512, 256)
    net_dropout: float = 0.0
    num_cross_layers: int = 3
    model_structure: str = 'parallel'

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        if self.model_structure not in MODEL_STRUCTURES:
            raise ValueError(f'model_structure must be one of {MODEL_STRUCTURES}, '
                             f'got {self.model_structure!r}')
        flat_emb = flatten(self.embed(ids))
        cross_out = GatedCrossNet(self.num_cross_layers, dtype=self.dtype,
                                  name='cross_net')(flat_emb)
        if self.model_structure == 'stacked':
            return self.dnn(cross_out, train=train).astype(jnp.float32)
        if self.model_structure == 'parallel':
            final = jnp.concatenate(
                [cross_out, self.dnn(flat_emb, train=train, output_dim=None)], axis=-1)
        else:
            final = cross_out
        return Linear(1, dtype=self.dtype, name='fc')(final)[:, 0].astype(jnp.float32)
