"""EulerNet (Tian et al., SIGIR 2023), as the authors' FuxiCTR ``EulerNet``.

Field embeddings ``e`` [B, F, D] become complex vectors by Euler's formula with a learned
per-field modulus ``mu`` (init 1): ``r = mu cos(e)``, ``p = mu sin(e)``. Euler interaction
layers (``layers/euler.py``) of ``shape[k]`` outputs each learn interaction orders
explicitly (in the log-modulus / phase domain) beside an implicit ReLU layer, and
``logit = fc(flatten(r_L)) + fc(flatten(p_L))``: one Linear on both parts, as the
authors' (its bias counted twice). No first-order term.

BARS publishes no EulerNet run. The defaults are the authors' Criteo setting (their FuxiCTR
log ``model_zoo/EulerNet/Criteo/.../EulerNet_criteo.log``: shape [20, 20], embedding 16,
dropouts 0.1, layer norm, embedding L2 1e-5; test AUC 0.814693 on a Criteo x4-sized split
whose numeric fields are not bucketed as BARS x4_001, so not a BARS x4_001 number).
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.base import EmbeddingModel, flatten
from mlctr.models.layers import initializers
from mlctr.models.layers.euler import EulerInteraction, torch_default_bias


class EulerNet(EmbeddingModel):
    """EulerNet; defaults are the authors' Criteo setting (no BARS run exists)."""

    shape: Sequence[int] = (20, 20)
    net_ex_dropout: float = 0.1
    net_im_dropout: float = 0.1
    layer_norm: bool = True

    @nn.compact
    def __call__(self, ids: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Args: ids int32 [B, F] global ids. Returns float32 logits [B]."""
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f'shape must list one output count >= 1 per Euler layer, '
                             f'got {self.shape!r}')
        feature_emb = self.embed(ids)
        mu = self.param('mu', nn.initializers.ones_init(), (self.num_fields, 1),
                        jnp.float32).astype(self.dtype)
        real, imag = mu * jnp.cos(feature_emb), mu * jnp.sin(feature_emb)
        for i, num_outputs in enumerate(self.shape):
            real, imag = EulerInteraction(num_outputs, self.net_ex_dropout, self.net_im_dropout,
                                          self.layer_norm, dtype=self.dtype,
                                          name=f'euler_{i}')(real, imag, train=train)
        width = self.shape[-1] * self.embedding_dim
        fc = nn.Dense(1, dtype=self.dtype, param_dtype=jnp.float32,
                      kernel_init=initializers.xavier_normal(),
                      bias_init=torch_default_bias(width), name='fc')
        return (fc(flatten(real)) + fc(flatten(imag)))[:, 0].astype(jnp.float32)
