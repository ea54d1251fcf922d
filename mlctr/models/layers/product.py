"""Pairwise field products for PNN (Qu et al., ICDM 2016; TOIS 2018).

Pairs are the ``F*(F-1)/2`` field pairs ``(i, j), i < j`` in ``np.triu_indices(F, 1)``
(row-major) order, as FuxiCTR's ``InnerProductInteraction``.

* ``InnerProduct``: ``p_ij = <e_i, e_j>`` -> [B, P] (FuxiCTR ``output="inner_product"``).
* ``OuterProduct``: the outer product ``e_i e_j^T`` (a D x D matrix) contracted with a learned
  D x D kernel per pair: ``p_ij = sum_{k,l} K_ij[k,l] e_ik e_jl = e_i^T K_ij e_j`` -> [B, P].
  FuxiCTR implements only the inner product; this is the kernel ("mat") form of the outer
  product of the PNN journal version (KPNN) and DeepCTR's ``OutterProductLayer``. It keeps the
  product-layer output [B, P] like IPNN's so the rest of PNN is shared; the 2016 OPNN's
  superposition trick (sum of embeddings before the outer product) is not used because it
  throws away which fields interact. The kernel is xavier_normal with fan_in = fan_out = D
  (std sqrt(1/D)), treating each K_ij as a D x D linear map.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mlctr.models.layers import initializers


def field_pairs(num_fields: int) -> tuple[np.ndarray, np.ndarray]:
  """Left and right field index of every pair i < j, row-major."""
  return np.triu_indices(num_fields, k=1)


def inner_product(feature_emb: jnp.ndarray) -> jnp.ndarray:
  """[B, F, D] -> [B, F*(F-1)/2] pairwise inner products."""
  left, right = field_pairs(feature_emb.shape[1])
  # The per-example Gram matrix [F, F], then its upper triangle: one batched matmul instead
  # of gathering two [B, P, D] pair tensors (and scatter-adding them in the backward pass),
  # ~6x faster forward + backward on CPU at F=39, D=16 despite computing all F^2 products.
  gram = jnp.einsum('bik,bjk->bij', feature_emb, feature_emb)
  return gram[:, left, right]


class InnerProduct(nn.Module):
  """Parameter-free module wrapper around :func:`inner_product`."""

  @nn.compact
  def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
    return inner_product(feature_emb)


class OuterProduct(nn.Module):
  """Kernel outer product per field pair; param ``kernel`` [P, D, D]. [B, F, D] -> [B, P]."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feature_emb: jnp.ndarray) -> jnp.ndarray:
    num_fields, dim = feature_emb.shape[1], feature_emb.shape[2]
    left, right = field_pairs(num_fields)
    num_pairs = len(left)
    kernel = self.param('kernel', initializers.normal((1.0 / dim) ** 0.5),
                        (num_pairs, dim, dim), jnp.float32).astype(self.dtype)
    feature_emb = feature_emb.astype(self.dtype)
    # e_i^T K e_j: project the left embedding first (O(P*D^2)) instead of forming D x D.
    left_proj = jnp.einsum('bpk,pkl->bpl', feature_emb[:, left, :], kernel)
    return jnp.sum(left_proj * feature_emb[:, right, :], axis=-1)
