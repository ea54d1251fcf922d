"""Cross networks: DCN (Wang et al. 2017), DCN-V2 (Wang et al. 2021), GDCN (Wang et al. 2023)
and DCNv3's (Li et al. 2024).

Follows FuxiCTR ``fuxictr/pytorch/layers/interactions/cross_net.py``:
  * ``CrossNet`` (DCN): ``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l``; ``w_l`` is an
    ``nn.Linear(dim, 1, bias=False)`` (xavier_normal), ``b_l`` zeros.
  * ``CrossNetV2`` (DCN-V2 full rank): ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` with an
    ``nn.Linear(dim, dim)`` (xavier_normal weight, zero bias).
  * ``CrossNetMix`` (DCN-V2 low-rank mixture of experts, from DeepCTR-Torch via FuxiCTR):
    per layer ``l`` and expert ``e``:
      ``E_e(x_l) = x0 * (U_e tanh(C_e tanh(V_e^T x_l)) + b_l)``;
    gates ``g_e = w_e . x_l`` (``nn.Linear(dim, 1, bias=False)``, xavier_normal), softmax over
    experts; ``x_{l+1} = sum_e softmax(g)_e E_e(x_l) + x_l``. ``U, V`` [E, dim, r] and ``C``
    [E, r, r] are xavier_normal with torch's fans for 3-D tensors; ``b_l`` zeros.
  * ``GatedCrossNet`` (GDCN, CIKM 2023, eq. 1 of "Towards Deeper, Lighter and Interpretable
    Cross Network"): ``x_{l+1} = x0 * (W_l x_l + b_l) * sigmoid(W^g_l x_l) + x_l``: DCN-V2's
    layer with an information gate per element. ``W_l``, ``W^g_l`` are
    ``nn.Linear(dim, dim, bias=False)`` (xavier_normal); ``b_l`` is uniform(0, 1), as the
    authors' code (FuxiCTR ``GateCorssLayer``) initialises it.
  * ``SelfMaskCrossNet`` (DCNv3, "Towards Next Generation Deep Cross Network", eqs. of LCN
    and ECN): per layer ``h = W_l x_l`` (``nn.Linear(dim, dim // 2, bias=False)``), the
    self-mask ``m = relu(LayerNorm(h))`` (without ``layer_norm``: ``relu(h)``), ``c = [h, h * m]``
    and ``x_{l+1} = x0 * (c + b_l) + x_l`` (linear cross network, LCN: order l + 1) or
    ``x_{l+1} = x_l * (c + b_l) + x_l`` (exponential cross network, ECN: order 2^l), then
    dropout. ``b_l`` is uniform(0, 1) (the authors' code); with ``batch_norm``, ``h`` is
    batch-normalised with the heads as channels (FuxiCTR's ``BatchNorm1d(num_heads)``).
    Inputs are per-head vectors [B, H, dim].
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlctr.models.layers import initializers
from mlctr.models.layers.dropout import Dropout
from mlctr.models.layers.mlp import Linear


class CrossNet(nn.Module):
    """DCN cross network. Input/Output [B, dim]."""

    num_layers: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x0: jnp.ndarray) -> jnp.ndarray:
        x0 = x0.astype(self.dtype)
        dim = x0.shape[-1]
        x = x0
        for i in range(self.num_layers):
            # The scalar x_l . w_l first: O(dim) per example, never a dim x dim outer product.
            xw = Linear(1, use_bias=False, dtype=self.dtype, name=f'cross_weight_{i}')(x)
            bias = self.param(f'cross_bias_{i}', nn.initializers.zeros_init(), (dim,), jnp.float32)
            x = x0 * xw + bias.astype(self.dtype) + x
        return x


# CrossNetV2 has CrossNet's frame (fields, input cast, loop over layers) on purpose: only the
# layer formula differs, and each class shows its paper's formula whole.
class CrossNetV2(nn.Module):
    """DCN-V2 full-rank cross network. Input/Output [B, dim]."""

    num_layers: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x0: jnp.ndarray) -> jnp.ndarray:
        x0 = x0.astype(self.dtype)
        dim = x0.shape[-1]
        x = x0
        for i in range(self.num_layers):
            x = x + x0 * Linear(dim, dtype=self.dtype, name=f'cross_layer_{i}')(x)
        return x


class CrossNetMix(nn.Module):
    """DCN-V2 low-rank mixture-of-experts cross network. Input/Output [B, dim]."""

    num_layers: int
    low_rank: int = 32
    num_experts: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x0: jnp.ndarray) -> jnp.ndarray:
        x0 = x0.astype(self.dtype)
        dim = x0.shape[-1]
        num_experts, rank = self.num_experts, self.low_rank
        # Gating vectors are shared across layers (FuxiCTR: one nn.Linear(dim, 1) per expert).
        gating = self.param('gating', initializers.xavier_normal(), (num_experts, dim, 1),
                            jnp.float32)
        x = x0
        for i in range(self.num_layers):
            u = self.param(f'U_{i}', initializers.torch_xavier_normal((num_experts, dim, rank)),
                           (num_experts, dim, rank), jnp.float32).astype(self.dtype)
            v = self.param(f'V_{i}', initializers.torch_xavier_normal((num_experts, dim, rank)),
                           (num_experts, dim, rank), jnp.float32).astype(self.dtype)
            c = self.param(f'C_{i}', initializers.torch_xavier_normal((num_experts, rank, rank)),
                           (num_experts, rank, rank), jnp.float32).astype(self.dtype)
            bias = self.param(f'bias_{i}', nn.initializers.zeros_init(), (dim,), jnp.float32)
            vx = jnp.tanh(jnp.einsum('edr,bd->ber', v, x))
            vx = jnp.tanh(jnp.einsum('ers,bes->ber', c, vx))
            uvx = jnp.einsum('edr,ber->bed', u, vx)
            experts = x0[:, None, :] * (uvx + bias.astype(self.dtype))  # [B, E, dim]
            gate_logits = jnp.einsum('bd,ed->be', x, gating[..., 0].astype(self.dtype))
            gates = jax.nn.softmax(gate_logits, axis=-1)
            x = jnp.einsum('bed,be->bd', experts, gates) + x
        return x


class GatedCrossNet(nn.Module):
    """GDCN gated cross network. Input/Output [B, dim]."""

    num_layers: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x0: jnp.ndarray) -> jnp.ndarray:
        x0 = x0.astype(self.dtype)
        dim = x0.shape[-1]
        x = x0
        for i in range(self.num_layers):
            cross = Linear(dim, use_bias=False, dtype=self.dtype, name=f'cross_weight_{i}')(x)
            gate = nn.sigmoid(Linear(dim, use_bias=False, dtype=self.dtype,
                                     name=f'gate_weight_{i}')(x))
            bias = self.param(f'cross_bias_{i}', nn.initializers.uniform(1.0), (dim,),
                              jnp.float32)
            x = x0 * (cross + bias.astype(self.dtype)) * gate + x
        return x


class SelfMaskCrossNet(nn.Module):
    """DCNv3 linear (LCN) or exponential (ECN) cross network with self-mask.
    Input/Output [B, H, dim] (dim even)."""

    num_layers: int
    exponential: bool
    dropout_rate: float = 0.0
    layer_norm: bool = True
    batch_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x0: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x0 = x0.astype(self.dtype)
        dim = x0.shape[-1]
        if dim % 2:
            raise ValueError(f'the cross input width must be even, got {dim}')
        x = x0
        for i in range(self.num_layers):
            h = Linear(dim // 2, use_bias=False, dtype=self.dtype, name=f'cross_weight_{i}')(x)
            if self.batch_norm:
                h = nn.BatchNorm(use_running_average=not train, axis=1,
                                 momentum=initializers.BATCH_NORM_MOMENTUM,
                                 epsilon=initializers.BATCH_NORM_EPSILON, dtype=self.dtype,
                                 param_dtype=jnp.float32, name=f'batch_norm_{i}')(h)
            masked = h
            if self.layer_norm:
                masked = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=jnp.float32,
                                      name=f'layer_norm_{i}')(h)
            cross = jnp.concatenate([h, h * nn.relu(masked)], axis=-1)
            bias = self.param(f'cross_bias_{i}', nn.initializers.uniform(1.0), (dim,),
                              jnp.float32).astype(self.dtype)
            x = (x if self.exponential else x0) * (cross + bias) + x
            if self.dropout_rate > 0:
                x = Dropout(self.dropout_rate)(x, deterministic=not train)
        return x
