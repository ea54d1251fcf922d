"""Pairwise field products: PNN's product layer (Qu et al., ICDM 2016; TOIS 2018), FiBiNET's.

Pairs are the ``F*(F-1)/2`` field pairs ``(i, j), i < j`` in ``np.triu_indices(F, 1)``
order, as FuxiCTR's ``InnerProductInteraction``.

* ``InnerProduct``: ``p_ij = <e_i, e_j>`` -> [B, P] (FuxiCTR ``output="inner_product"``).
* ``OuterProduct``: ``p_ij = e_i^T K_ij e_j`` with a learned D x D kernel per pair -> [B, P],
  the kernel form of the outer product (PNN journal version's KPNN, DeepCTR's
  ``OutterProductLayer``; FuxiCTR has only the inner product). Its output has IPNN's shape,
  so the rest of PNN is shared; the 2016 superposition trick (summing the embeddings first)
  is not used: it loses which fields interact. Kernel: xavier_normal, fan_in = fan_out = D.

Implementation: no gathers of field pairs (``e[:, left] * e[:, right]``), whose gathers along
the small field axis and scatter-add gradients cost more than the products on CPU. Inner
products are one Gram matmul ``E E^T`` and its strict upper triangle; the other products go
by left field ``i``, whose pairs' right fields ``i+1 .. F-1`` are one contiguous slice of the
flattened [B, F*D] embeddings, so each block is one dense matmul.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlctr.models.layers import initializers


def field_pairs(num_fields: int) -> tuple[np.ndarray, np.ndarray]:
    """Left and right field index of every pair i < j, row-major."""
    return np.triu_indices(num_fields, k=1)


def pair_blocks(num_fields: int) -> list[tuple[int, int, int]]:
    """``field_pairs`` grouped by left field: ``(i, start, count)`` for every field ``i`` that has
    pairs; pairs ``start .. start + count - 1`` are ``(i, i+1) .. (i, F-1)``."""
    return [(i, i * (2 * num_fields - i - 1) // 2, num_fields - 1 - i)
            for i in range(num_fields - 1)]


@functools.lru_cache(maxsize=None)
def _triu_flat_indices(num_fields: int) -> np.ndarray:
    left, right = field_pairs(num_fields)
    return (left * num_fields + right).astype(np.int32)


def inner_product(feature_emb: jnp.ndarray) -> jnp.ndarray:
    """[B, F, D] -> [B, F*(F-1)/2] pairwise inner products ``<e_i, e_j>``, i < j."""
    batch, num_fields = feature_emb.shape[:2]
    gram = jnp.einsum('bik,bjk->bij', feature_emb, feature_emb,
                      precision=jax.lax.Precision.HIGHEST)
    return gram.reshape(batch, num_fields * num_fields).at[:, _triu_flat_indices(num_fields)].get(
        indices_are_sorted=True, unique_indices=True, mode='promise_in_bounds')


def pairwise_product(left_emb: jnp.ndarray, right_emb: jnp.ndarray) -> jnp.ndarray:
    """``left_emb[:, i] * right_emb[:, j]`` for every pair i < j: 2 x [B, F, D] -> [B, P, D]."""
    batch, num_fields, dim = left_emb.shape
    right_flat = right_emb.reshape(batch, num_fields * dim)
    return _concat_blocks(
        [(count, jnp.tile(left_emb[:, i, :], (1, count)) * right_flat[:, (i + 1) * dim:])
         for i, _, count in pair_blocks(num_fields)], left_emb)


def pairwise_bilinear(feature_emb: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """``(e_i K_p) * e_j`` for every pair p = (i, j), i < j: [B, F, D], [P, D, D] -> [B, P, D]."""
    return _concat_blocks(list(_bilinear_blocks(feature_emb, kernel)), feature_emb)


def _bilinear_blocks(feature_emb, kernel):
    """Yields ``(count, block)``: the [B, count * D] products ``(e_i K_p) * e_j`` of the pairs
    p = (i, j) of one left field i, in triu order."""
    batch, num_fields, dim = feature_emb.shape
    num_pairs = kernel.shape[0]
    # [D, P*D]: column block p is K_p, so a left field's kernels are one contiguous slice.
    kernel_cols = kernel.transpose(1, 0, 2).reshape(dim, num_pairs * dim)
    emb_flat = feature_emb.reshape(batch, num_fields * dim)
    for i, start, count in pair_blocks(num_fields):
        block_kernels = kernel_cols[:, start * dim:(start + count) * dim]
        left_proj = jnp.dot(feature_emb[:, i, :], block_kernels)
        yield count, left_proj * emb_flat[:, (i + 1) * dim:]


def _concat_blocks(blocks, feature_emb):
    """``(count, [B, count * D])`` pair blocks -> [B, P, D]."""
    batch, _, dim = feature_emb.shape
    if not blocks:  # fewer than two fields
        return jnp.zeros((batch, 0, dim), feature_emb.dtype)
    return jnp.concatenate([block for _, block in blocks], axis=1).reshape(batch, -1, dim)


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
        num_pairs = num_fields * (num_fields - 1) // 2
        kernel = self.param('kernel', initializers.normal((1.0 / dim) ** 0.5),
                            (num_pairs, dim, dim), jnp.float32).astype(self.dtype)
        feature_emb = feature_emb.astype(self.dtype)
        # e_i^T K e_j: project the left embedding first (O(P*D^2)) instead of forming D x D; sum
        # each left field's block over D before concatenating (never a [B, P, D] concat).
        batch = feature_emb.shape[0]
        sums = [block.reshape(batch, count, dim).sum(axis=-1)
                for count, block in _bilinear_blocks(feature_emb, kernel)]
        if not sums:  # fewer than two fields
            return jnp.zeros((batch, 0), self.dtype)
        return jnp.concatenate(sums, axis=1)
