"""DCN-V2 (Wang et al., WWW 2021), as FuxiCTR ``DCNv2``.

``x0 = flatten(e)``; cross network = full-rank ``CrossNetV2`` or, with
``use_low_rank_mixture``, the low-rank mixture of experts ``CrossNetMix`` (``low_rank``,
``num_experts``). ``model_structure``:
  * ``crossnet_only``: ``fc(cross(x0))``;
  * ``stacked``: ``fc(stacked_dnn(cross(x0)))``;
  * ``parallel``: ``fc([cross(x0), parallel_dnn(x0)])``;
  * ``stacked_parallel``: ``fc([stacked_dnn(cross(x0)), parallel_dnn(x0)])``.
The DNNs have no output layer; ``fc`` is a Linear to one logit. Hyperparameter names are
FuxiCTR's (``stacked_dnn_hidden_units``, ``parallel_dnn_hidden_units``), so BARS DCNv2 configs
carry over unchanged.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import EmbeddingModel, flatten
from mlctr.models.layers.cross import CrossNetMix, CrossNetV2
from mlctr.models.layers.mlp import Linear, MLPBlock

MODEL_STRUCTURES = ('crossnet_only', 'stacked', 'parallel', 'stacked_parallel')


class DCNv2(EmbeddingModel):
    """DCN-V2 / DCN-Mix; defaults are BARS Criteo_x4_001."""

    stacked_dnn_hidden_units: Sequence[int] = (500, 500, 500)
    parallel_dnn_hidden_units: Sequence[int] = (1000, 1000, 1000, 1000, 1000)
    net_dropout: float = 0.1
    batch_norm: bool = True
    num_cross_layers: int = 3
    model_structure: str = 'parallel'
    use_low_rank_mixture: bool = False
    low_rank: int = 32
    num_experts: int = 4

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        if self.model_structure not in MODEL_STRUCTURES:
            raise ValueError(f'model_structure must be one of {MODEL_STRUCTURES}, '
                             f'got {self.model_structure!r}')
        flat_emb = flatten(self.embed(ids))
        if self.use_low_rank_mixture:
            cross = CrossNetMix(self.num_cross_layers, self.low_rank, self.num_experts,
                                dtype=self.dtype, name='cross_net')
        else:
            cross = CrossNetV2(self.num_cross_layers, dtype=self.dtype, name='cross_net')
        cross_out = cross(flat_emb)

        def dnn(units, name, x):
            return MLPBlock(units, self.net_dropout, self.batch_norm, dtype=self.dtype,
                            name=name)(x, train=train)

        if self.model_structure == 'crossnet_only':
            final = cross_out
        elif self.model_structure == 'stacked':
            final = dnn(self.stacked_dnn_hidden_units, 'stacked_dnn', cross_out)
        elif self.model_structure == 'parallel':
            parallel_out = dnn(self.parallel_dnn_hidden_units, 'parallel_dnn', flat_emb)
            final = jnp.concatenate([cross_out, parallel_out], axis=-1)
        else:
            final = jnp.concatenate(
                [dnn(self.stacked_dnn_hidden_units, 'stacked_dnn', cross_out),
                 dnn(self.parallel_dnn_hidden_units, 'parallel_dnn', flat_emb)], axis=-1)
        return Linear(1, dtype=self.dtype, name='fc')(final)[:, 0].astype(jnp.float32)
