"""Auxiliary losses on a model's sub-networks: the channel between a model and the loss.

Some models supervise their sub-networks besides the final prediction: DCNv3's Tri-BCE
(Li et al. 2024) adds a BCE on each of its two sub-networks' logits, weighted by how much
worse each is than the whole; FinalNet's two-block form (Zhu et al. 2023) pulls each
block's prediction towards the final one. The channel:

  * In ``__call__`` (training and evaluation alike) the model records each sub-network's
    logits [B] with ``sow_logits(self, name, logits)`` in the ``'aux_logits'`` collection;
    its return value stays the final logits [B], so prediction, evaluation, checkpoints
    and every caller that ignores the collection are unchanged.
  * The model class defines ``auxiliary_loss(self, logits, aux_logits, labels)``: the
    scalar it adds to the BCE of its final logits, from the final logits [B], the
    recorded ``{name: logits [B]}`` and the labels [B]. It reads only the model's fields.
  * The trainer (``mutual.make_loss_fn``) applies such a model with ``'aux_logits'``
    mutable and adds ``auxiliary_loss`` to that peer's BCE term. The mutual term stays on
    the final prediction only. Models without ``auxiliary_loss`` run exactly as before.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

COLLECTION = 'aux_logits'


def sow_logits(module: nn.Module, name: str, logits: jnp.ndarray) -> None:
    """Records a sub-network's logits [B] (float32) under ``name`` for ``auxiliary_loss``."""
    module.sow(COLLECTION, name, logits.astype(jnp.float32),
               init_fn=lambda: None, reduce_fn=lambda _, value: value)


def has_auxiliary_loss(model: nn.Module) -> bool:
    """Whether ``model``'s class adds auxiliary terms to its BCE."""
    return callable(getattr(model, 'auxiliary_loss', None))


def mean_bce(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """Batch mean of the sigmoid BCE of ``logits`` against (possibly soft) ``targets``."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))


def tri_bce(logits: jnp.ndarray, sub_logits: Sequence[jnp.ndarray],
            labels: jnp.ndarray) -> jnp.ndarray:
    """DCNv3's Tri-BCE auxiliary term: ``sum_k w_k * L_k`` with ``L_k`` the BCE of
    sub-network k and ``w_k = max(0, L_k - L)``, ``L`` the BCE of the final logits.

    The weights are not detached: as the authors' code (FuxiCTR ``DCNv3.add_loss``), the
    gradient also flows through ``w_k`` (the paper's equation does not say).
    """
    final = mean_bce(logits, labels)
    total = jnp.zeros((), jnp.float32)
    for sub in sub_logits:
        sub_bce = mean_bce(sub, labels)
        total = total + jnp.maximum(sub_bce - final, 0.0) * sub_bce
    return total


def distillation_bce(logits: jnp.ndarray, sub_logits: Sequence[jnp.ndarray]) -> jnp.ndarray:
    """FinalNet two-block term: ``sum_k BCE(sub_k, stop_gradient(sigmoid(logits)))``, each
    block's prediction pulled towards the final one (a constant)."""
    targets = jax.lax.stop_gradient(jax.nn.sigmoid(logits))
    return sum((mean_bce(sub, targets) for sub in sub_logits), jnp.zeros((), jnp.float32))

