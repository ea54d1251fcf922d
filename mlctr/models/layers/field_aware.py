"""ONN's operation-aware interaction (Yang et al., Neural Networks 2020; FuxiCTR
``ONN.field_aware_interaction``).

Every field f has F embeddings of a value, one per operation: ``e[:, f, 0]`` is its copy
(fed to the DNN as is) and ``e[:, f, 1:]`` its F-1 embeddings for the inner product with each
other field, in field order. So field i meets field j (i < j) with its embedding number j
(``j - 1`` among the others, after the copy), and j meets i with its number i + 1:
``p_ij = <e[:, i, j], e[:, j, i + 1]>``, for the F(F-1)/2 pairs i < j in
``np.triu_indices(F, 1)`` order (FuxiCTR's, and every pair layer's here).
"""

import jax.numpy as jnp
import numpy as np


def operation_aware_products(embeddings: jnp.ndarray) -> jnp.ndarray:
    """Inner products of each field pair's operation-aware embeddings.

    Args:
      embeddings: [B, F, F, D]: field f's embedding for operation t at ``[:, f, t]``.

    Returns:
      [B, F(F-1)/2]: ``<e[:, i, j], e[:, j, i + 1]>`` for i < j.
    """
    num_fields = embeddings.shape[1]
    if embeddings.shape[2] != num_fields:
        raise ValueError(f'operation-aware embeddings need F = {num_fields} per field, got '
                         f'{embeddings.shape[2]} (shape {embeddings.shape})')
    left_field, right_field = np.triu_indices(num_fields, 1)
    left = embeddings[:, left_field, right_field]        # field i's embedding for j
    right = embeddings[:, right_field, left_field + 1]   # field j's embedding for i
    return jnp.sum(left * right, axis=-1)
