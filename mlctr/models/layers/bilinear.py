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

BILINEAR_TYPES = ('field_all', 'field_each', 'field_interaction')


class BilinearInteraction(nn.Module):
  """[B, F, D] -> [B, F*(F-1)/2, D]; param ``bilinear_W``."""

  bilinear_type: str = 'field_interaction'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
    num_fields, dim = feature_emb.shape[1], feature_emb.shape[2]
    num_pairs = num_fields * (num_fields - 1) // 2
    feature_emb = feature_emb.astype(self.dtype)
    if self.bilinear_type == 'field_all':
      shape = (dim, dim)
    elif self.bilinear_type == 'field_each':
      shape = (num_fields, dim, dim)
    elif self.bilinear_type == 'field_interaction':
      shape = (num_pairs, dim, dim)
    else:
      raise ValueError(f'bilinear_type must be one of {BILINEAR_TYPES}, '
                       f'got {self.bilinear_type!r}')
    w = self.param('bilinear_W', initializers.torch_xavier_normal(shape), shape,
                   jnp.float32).astype(self.dtype)
    # Pairs (i, j > i) come in blocks of one left field i; the right embeddings of a block are
    # the slice e[:, i+1:], so no [B, P, D] gather is needed, and a block's field_interaction
    # weights multiply e_i in one [D, n_i * D] matmul. ~2x faster forward + backward on CPU
    # than gathering the pairs and a batched einsum over P (which transposes [B, P, D] twice).
    if self.bilinear_type == 'field_all':
      projected = feature_emb @ w                                  # [B, F, D]
    elif self.bilinear_type == 'field_each':
      projected = jnp.einsum('bfk,fkl->bfl', feature_emb, w)       # [B, F, D]
    batch = feature_emb.shape[0]
    blocks, start = [], 0
    for i in range(num_fields - 1):
      n = num_fields - 1 - i
      if self.bilinear_type == 'field_interaction':
        block_w = jnp.transpose(w[start:start + n], (1, 0, 2)).reshape(dim, n * dim)
        left_emb = (feature_emb[:, i, :] @ block_w).reshape(batch, n, dim)
      else:
        left_emb = projected[:, i:i + 1, :]
      blocks.append(left_emb * feature_emb[:, i + 1:, :])
      start += n
    return jnp.concatenate(blocks, axis=1)
