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
from mlctr.models.layers.product import field_pairs

BILINEAR_TYPES = ('field_all', 'field_each', 'field_interaction')


class BilinearInteraction(nn.Module):
  """[B, F, D] -> [B, F*(F-1)/2, D]; param ``bilinear_W``."""

  bilinear_type: str = 'field_interaction'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
    num_fields, dim = feature_emb.shape[1], feature_emb.shape[2]
    left, right = field_pairs(num_fields)
    feature_emb = feature_emb.astype(self.dtype)
    if self.bilinear_type == 'field_all':
      shape = (dim, dim)
    elif self.bilinear_type == 'field_each':
      shape = (num_fields, dim, dim)
    elif self.bilinear_type == 'field_interaction':
      shape = (len(left), dim, dim)
    else:
      raise ValueError(f'bilinear_type must be one of {BILINEAR_TYPES}, '
                       f'got {self.bilinear_type!r}')
    w = self.param('bilinear_W', initializers.torch_xavier_normal(shape), shape,
                   jnp.float32).astype(self.dtype)
    if self.bilinear_type == 'field_all':
      left_emb = jnp.einsum('bpk,kl->bpl', feature_emb[:, left, :], w)
    elif self.bilinear_type == 'field_each':
      # Multiply each field once, then pick the left field of every pair.
      left_emb = jnp.einsum('bfk,fkl->bfl', feature_emb, w)[:, left, :]
    else:
      left_emb = jnp.einsum('bpk,pkl->bpl', feature_emb[:, left, :], w)
    return left_emb * feature_emb[:, right, :]
