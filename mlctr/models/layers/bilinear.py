"""Bilinear interaction (FiBiNET), as FuxiCTR ``BilinearInteractionV2``.

For each field pair (i < j, ``np.triu_indices`` order): ``p_ij = (e_i W) * e_j`` [D], with
``bilinear_type``:
  * ``field_all``: one W [D, D] shared by all fields;
  * ``field_each``: one W_i [D, D] per (left) field, param [F, D, D];
  * ``field_interaction``: one W_ij [D, D] per pair, param [P, D, D].
Output [B, P, D]. ``W`` is xavier_normal with torch's fans for its tensor shape (FuxiCTR
``reset_parameters``): [D, D] -> std sqrt(1/D); [N, D, D] -> std sqrt(2/(D*D + N*D)).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models.layers import initializers
from mlctr.models.layers.product import pairwise_bilinear, pairwise_product

BILINEAR_TYPES = ('field_all', 'field_each', 'field_interaction')


class BilinearInteraction(nn.Module):
    """[B, F, D] -> [B, F*(F-1)/2, D]; param ``bilinear_W``."""

    bilinear_type: str = 'field_interaction'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
        num_fields, dim = feature_emb.shape[1], feature_emb.shape[2]
        feature_emb = feature_emb.astype(self.dtype)
        if self.bilinear_type == 'field_all':
            shape = (dim, dim)
        elif self.bilinear_type == 'field_each':
            shape = (num_fields, dim, dim)
        elif self.bilinear_type == 'field_interaction':
            shape = (num_fields * (num_fields - 1) // 2, dim, dim)
        else:
            raise ValueError(f'bilinear_type must be one of {BILINEAR_TYPES}, '
                             f'got {self.bilinear_type!r}')
        w = self.param('bilinear_W', initializers.torch_xavier_normal(shape), shape,
                       jnp.float32).astype(self.dtype)
        # Pair blocks instead of gathers of field pairs (slow on CPU): see layers/product.py.
        if self.bilinear_type == 'field_interaction':
            return pairwise_bilinear(feature_emb, w)
        # field_all / field_each: multiply each field once, then pair it with the later fields.
        if self.bilinear_type == 'field_all':
            left_emb = jnp.einsum('bfk,kl->bfl', feature_emb, w)
        else:
            left_emb = jnp.einsum('bfk,fkl->bfl', feature_emb, w)
        return pairwise_product(left_emb, feature_emb)
