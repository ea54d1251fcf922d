"""Parameter initialisers that reproduce FuxiCTR's (PyTorch) initialisation exactly.

FuxiCTR's ``BaseModel.init_weights`` does, in this order:
  1. every ``nn.Linear`` / ``nn.Conv1d``: ``xavier_normal_`` weight, bias filled with 0;
  2. every module with its own ``init_weights``/``reset_parameters`` (embeddings, bilinear
     weights, ...): that module's custom initialiser;
  3. every ``nn.Embedding``: ``normal_(std=1e-4)`` (``embedding_initializer`` default).

PyTorch's ``xavier_normal_`` is an *untruncated* normal with
``std = sqrt(2 / (fan_in + fan_out))``, where for a tensor of shape ``(s0, s1, *rest)``
``fan_in = s1 * prod(rest)`` and ``fan_out = s0 * prod(rest)``. JAX's ``glorot_normal`` is
truncated, so we build the initialisers explicitly here.
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp

# FuxiCTR: FeatureEmbedding(..., embedding_initializer="partial(nn.init.normal_, std=1e-4)").
EMBEDDING_STD = 1e-4

# PyTorch nn.BatchNorm1d defaults (momentum 0.1 in torch's convention = 0.9 in flax's).
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def normal(std: float):
    """Untruncated normal(0, std) initialiser."""

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


def embedding_normal():
    """FuxiCTR's embedding initialiser: normal(std=1e-4)."""
    return normal(EMBEDDING_STD)


def xavier_normal():
    """torch.nn.init.xavier_normal_ for a flax Dense kernel of shape (fan_in, fan_out).

    Equal to torch's value for the transposed (out, in) Linear weight.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = shape[-2], shape[-1]
        return normal(math.sqrt(2.0 / (fan_in + fan_out)))(key, shape, dtype)

    return init


def torch_xavier_normal(torch_shape: Sequence[int]):
    """torch.nn.init.xavier_normal_ applied to a tensor of ``torch_shape`` (any rank >= 2).

    Used for FuxiCTR's custom ``nn.Parameter`` tensors (bilinear ``bilinear_W``, CrossNetMix
    ``U/V/C``), whose torch fans are not the flax Dense convention.
    """
    receptive = math.prod(torch_shape[2:]) if len(torch_shape) > 2 else 1
    fan_in = torch_shape[1] * receptive
    fan_out = torch_shape[0] * receptive
    return normal(math.sqrt(2.0 / (fan_in + fan_out)))
