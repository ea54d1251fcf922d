"""Peer groups, the mutual-learning loss and the one jitted step for all peers.

A *peer* is one CTR model taking part in mutual learning. Peers that share an
architecture and hyperparameters form a *group*: their parameter pytrees are
stacked on a leading axis of size `n_g`, initialised with
`jax.vmap(model.init)` over one key per peer, and updated together. Groups of
different architectures run side by side inside the same jitted step.

Loss of peer n (N peers, logits z_n, probabilities p_n = sigmoid(z_n)):

    loss_n = BCE(y, z_n) + alpha / (N - 1) * sum_{i != n} D(p_i, p_n) + L2_n

  * D = 'mse': mean_b (p_i - p_n)^2 on probabilities (Yilmaz & Aldemir 2024).
  * D = 'kl':  mean_b KL(Bernoulli(p_i) || Bernoulli(p_n)) (Deep Mutual
    Learning, Zhang et al. 2018); computed from logits for stability.

`transfer='ektf'` replaces the whole mutual term (not D) by EKTF's teacher->student and
student<->student MSE terms with examination weights (`ektf_terms`; Li et al. 2024):
a different loss, so a key of its own beside `divergence` (which it ignores).

With `stop_gradient=True` (default, as in DML) the companions' predictions p_i
are constants in loss_n, so peer n is moved only by its own loss. With
`stop_gradient=False`, all peers descend the gradient of sum_n loss_n, so the
mutual terms pull both ways. N = 1 (or alpha = 0) is exactly ordinary
training: the mutual term is identically zero.

State layout (a plain dict pytree, easy to checkpoint):
  step:          int32 scalar, number of updates done.
  rng:           PRNG key; dropout of peer k at step s uses
                 fold_in(fold_in(rng, s), k).
  params:        tuple over groups of stacked param pytrees.
  batch_stats:   tuple over groups of stacked batch-norm stats ({} if none).
  opt_state:     tuple over groups of stacked optax states (with a
                 `sparse.SparseOptimizer`: {'dense': ..., 'rows': per-row states of
                 the embedding tables, nested like the params}).
  learning_rate: float32 [N], one learning rate per peer (decayed per peer by
                 the trainer; 0 freezes a peer that has early-stopped).

On a mesh with a `table` axis (mlctr/sharding.py) the tables in the state (and their
optimizer state) have `Peers.table_rows` rows: the vocabulary padded with zero rows to a
multiple of mesh.table. No id reaches a padding row: the lookups read ids < vocab_size,
the sparse step's padding slots start at table_rows, and with dense Adam a padding row's
gradient (0 from the loss, L2 of a zero row) is 0, so it stays 0. Exported per-peer
weights (`peer_variables`) drop the padding, so they fit the unpadded models.

With quotient-remainder embeddings (`config.vocab.qr_collisions` = m >= 2,
mlctr/models/qr.py) `Peers.qr_layout` holds the layout, the tables have its `num_rows` rows
(then the padding above) and the models take table rows [B, 2F]. The state, the batches
and the checkpoints keep dataset ids [B, F]: `Peers.table_ids` maps them to table rows in
one place, inside the jitted functions (the train step, before the sparse step gathers
its rows, so lazy Adam updates the quotient and remainder rows the batch touches; the
predict function; `init_state`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlctr import models as model_zoo
from mlctr import sharding
from mlctr import sparse
from mlctr.models import qr
from mlctr.models import regularization

DIVERGENCES = ("mse", "kl")
TRANSFERS = ("pairwise", "ektf")  # the mutual term: sum of D over companions | EKTF's
PEER_EXECUTIONS = ("auto", "vmap", "unroll")


@dataclasses.dataclass(frozen=True)
class PeerGroup:
    """Peers sharing one architecture and hyperparameter set (one stacked pytree).

    Attributes:
      config_key: key of the hyperparameter set in `config.models`.
      model: the Flax module (same for every peer of the group).
      names: peer names, in the order of the stacked axis.
    """

    config_key: str
    model: nn.Module
    names: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.names)


@dataclasses.dataclass(frozen=True)
class Peers:
    """All peers of a run, grouped; the global peer order is group after group."""

    groups: tuple[PeerGroup, ...]
    # Rows of the embedding tables held in the state; 0: the models' vocab_size (no padding).
    table_rows: int = 0
    # Quotient-remainder embeddings: the layout of the table rows; None: one row per id.
    qr_layout: Optional[qr.QRLayout] = None

    def table_ids(self, ids: jax.Array) -> jax.Array:
        """The table rows the models look up for dataset ids [B, F]: the ids themselves,
        or with QR the [B, 2F] quotient and remainder rows (`QRLayout.jnp_rows`)."""
        return ids if self.qr_layout is None else self.qr_layout.jnp_rows(ids)

    @property
    def vocab_size(self) -> int:
        """Rows of the models' tables (the vocabulary)."""
        return max(group.model.vocab_size for group in self.groups)

    @property
    def stored_rows(self) -> int:
        """Rows of the tables in the training state: the vocabulary plus any padding."""
        return self.table_rows or self.vocab_size

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for group in self.groups for name in group.names)

    @property
    def size(self) -> int:
        return len(self.names)

    def group_slices(self) -> list[slice]:
        """The slice of the global peer axis that each group occupies."""
        slices, start = [], 0
        for group in self.groups:
            slices.append(slice(start, start + group.size))
            start += group.size
        return slices


def parse_peer_spec(spec: str | Sequence[str]) -> list[str]:
    """Splits 'deepfm,dcn,deepfm*2' into ['deepfm', 'dcn', 'deepfm', 'deepfm']."""
    if isinstance(spec, str):
        items = [item.strip() for item in spec.replace("+", ",").split(",")]
    else:
        items = [str(item).strip() for item in spec]
    keys = []
    for item in items:
        if not item:
            continue
        if "*" in item:
            key, _, count = item.partition("*")
            if not count.strip().isdigit() or int(count) < 1:
                raise ValueError(f"bad peer entry {item!r}: expected NAME*COUNT with COUNT >= 1")
            keys.extend([key.strip()] * int(count))
        else:
            keys.append(item)
    if not keys:
        raise ValueError(f"no peers in peer spec {spec!r}")
    return keys


def peer_names(keys: Sequence[str]) -> list[str]:
    """The peers' names, in order, for config keys (`parse_peer_spec`): a key used once
    names its peer; a key used k > 1 times names them key_0 ... key_{k-1}."""
    counts = {key: keys.count(key) for key in keys}
    seen: dict[str, int] = {}
    names = []
    for key in keys:
        names.append(key if counts[key] == 1 else f"{key}_{seen.get(key, 0)}")
        seen[key] = seen.get(key, 0) + 1
    return names


def qr_layout(config, dataset) -> Optional[qr.QRLayout]:
    """The run's quotient-remainder layout: None unless `config.vocab.qr_collisions` >= 2.

    Args:
      config: the run config; a saved config without the `vocab.qr_*` keys (a run that
        predates them) has QR off.
      dataset: the prepared dataset (its feature map's `fields`, in column order).
    """
    vocab = config.get("vocab") or {}
    collisions = int(vocab.get("qr_collisions", 0))
    if not collisions:
        return None
    return qr.QRLayout.from_fields(dataset.feature_map["fields"], collisions,
                                   vocab.get("qr_combiner", "product"))


def build_peers(spec, models_config, *, vocab_size: int, num_fields: int,
                dtype: Any = jnp.float32, table_row_multiple: int = 1,
                qr_layout: Optional[qr.QRLayout] = None) -> Peers:
    """Builds the peer groups named by `spec` from hyperparameter sets.

    Args:
      spec: peer spec, e.g. "deepfm,dcn,pnn,fibinet" or "deepfm*4". Each entry
        is a key of `models_config`.
      models_config: mapping key -> hyperparameters. A set may name its
        architecture with `model` (default: the key itself), so
        `deepfm_small = {model: 'deepfm', dnn_hidden_units: (64,)}` works.
      vocab_size: total rows of the concatenated embedding table.
      num_fields: number of feature fields.
      dtype: compute dtype of the models (a dtype or its name, e.g. 'bfloat16').
      table_row_multiple: the state's tables get rows padded to a multiple of this
        (`sharding.table_row_multiple(mesh)`: rows split over mesh.table must divide).
      qr_layout: quotient-remainder embeddings (`qr_layout(config, dataset)`) of the
        `vocab_size` dataset ids: tables of `qr_layout.num_rows` rows; None: one row per id.

    Returns:
      Peers whose groups follow the first appearance of each key in `spec`.
      A key used once names its peer by the key; a key used k > 1 times names
      them key_0 ... key_{k-1}.
    """
    keys = parse_peer_spec(spec)
    model_fields = dict(vocab_size=vocab_size, num_fields=num_fields, dtype=jnp.dtype(dtype))
    if qr_layout is not None:
        if (qr_layout.vocab_size, len(qr_layout.sizes)) != (vocab_size, num_fields):
            raise ValueError(f"the qr layout covers {qr_layout.vocab_size} ids in "
                             f"{len(qr_layout.sizes)} fields, not the dataset's {vocab_size} "
                             f"in {num_fields}")
        model_fields.update(vocab_size=qr_layout.num_rows, qr_combiner=qr_layout.combiner)
    groups = []
    for key in dict.fromkeys(keys):
        if key not in models_config:
            raise ValueError(
                f"peer {key!r} has no hyperparameter set in config.models "
                f"(known: {sorted(models_config)})")
        hparams = dict(models_config[key])
        arch = hparams.pop("model", key)
        model = model_zoo.create_model(arch, **model_fields, **hparams)
        names = tuple(name for k, name in zip(keys, peer_names(keys)) if k == key)
        groups.append(PeerGroup(config_key=key, model=model, names=names))
    if table_row_multiple < 1:
        raise ValueError(f"table_row_multiple must be >= 1, got {table_row_multiple}")
    rows = model_fields["vocab_size"]
    table_rows = sharding.padded_table_rows(rows, table_row_multiple)
    return Peers(groups=tuple(groups), table_rows=table_rows if table_rows != rows else 0,
                 qr_layout=qr_layout)


def tables_with_rows(tree, rows: int, axis: int):
    """`tree` with every `embedding_table` leaf cut or zero-padded to `rows` along `axis`."""

    def one(path, x):
        if not sparse.is_table(path) or x.shape[axis] == rows:
            return x
        if x.shape[axis] > rows:
            return x[(slice(None),) * axis + (slice(0, rows),)]
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, rows - x.shape[axis])
        return jnp.pad(x, widths)

    return jax.tree_util.tree_map_with_path(one, tree)


def make_optimizer(grad_clip_norm: float = 10.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, embedding_optimizer: str = "dense"
                   ) -> optax.GradientTransformation | sparse.SparseOptimizer:
    """Adam direction without the learning rate (applied per peer in the step).

    FuxiCTR clips gradients at global norm 10 before Adam; `grad_clip_norm <= 0`
    disables clipping. The norm is taken per peer (the step vmaps over peers).

    `embedding_optimizer` other than 'dense' ('lazy_adam', 'adagrad', 'sgd') returns a
    `sparse.SparseOptimizer`: the embedding tables get row-wise updates of only the rows
    in the batch (see mlctr/sparse.py for the exact semantics), the rest Adam; the step
    built by `make_train_step` then takes the sparse path.
    """
    if embedding_optimizer != "dense":
        return sparse.SparseOptimizer(embedding_optimizer, grad_clip_norm, b1, b2, eps)
    parts = []
    if grad_clip_norm and grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    return optax.chain(*parts)


def peer_init_keys(key: jax.Array, num_peers: int, same_init: bool = False) -> jax.Array:
    """One init key per peer; `same_init` deliberately gives them all the same."""
    if same_init:
        return jnp.stack([key] * num_peers)
    return jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(num_peers))


def init_state(peers: Peers, key: jax.Array, sample_ids: jax.Array,
               optimizer: optax.GradientTransformation, learning_rate: float,
               *, same_init: bool = False) -> dict:
    """Initialises every peer from its own key and builds the training state.

    Args:
      peers: the peer groups.
      key: the run's init key.
      sample_ids: an int32 [B, F] batch of dataset ids used to trace shapes.
      optimizer: from `make_optimizer`.
      learning_rate: the initial learning rate of every peer.
      same_init: if True, every peer of a group starts from the same weights.

    Returns:
      The state dict described in the module docstring.
    """
    init_key, rng = jax.random.split(key)
    all_keys = peer_init_keys(init_key, peers.size, same_init)
    params, batch_stats, opt_state = [], [], []
    for group, sl in zip(peers.groups, peers.group_slices()):
        def init_one(k, model=group.model):
            variables = model.init({"params": k, "dropout": k}, peers.table_ids(sample_ids),
                                   train=False)
            return variables["params"], variables.get("batch_stats", {})
        group_params, group_stats = jax.jit(jax.vmap(init_one))(all_keys[sl])
        # Padding rows (mesh.table) are zeros appended to the initialised table.
        group_params = tables_with_rows(group_params, peers.stored_rows, axis=1)
        params.append(group_params)
        batch_stats.append(group_stats)
        opt_state.append(jax.vmap(optimizer.init)(group_params))
    return {
        "step": jnp.zeros((), jnp.int32),
        "rng": rng,
        "params": tuple(params),
        "batch_stats": tuple(batch_stats),
        "opt_state": tuple(opt_state),
        "learning_rate": jnp.full((peers.size,), learning_rate, jnp.float32),
    }


# ---------------------------------------------------------------------------
# The mutual loss.


def pairwise_divergence(target_logits: jax.Array, peer_logits: jax.Array,
                        divergence: str) -> jax.Array:
    """D(p_i, p_n) for every pair, averaged over the batch.

    Args:
      target_logits: [N, B] logits of the companions (the targets p_i).
      peer_logits: [N, B] logits of the peers being trained (p_n).
      divergence: 'mse' or 'kl'.
      (`weights` are uniform: training batches have no padding.)

    Returns:
      [N, N] matrix D[i, n] = mean_b D(p_i[b], p_n[b]).
    """
    zi = target_logits[:, None, :]
    zn = peer_logits[None, :, :]
    if divergence == "mse":
        d = (jax.nn.sigmoid(zi) - jax.nn.sigmoid(zn)) ** 2
    elif divergence == "kl":
        # KL(Bern(p_i) || Bern(p_n)) = p_i (log p_i - log p_n)
        #                            + (1 - p_i)(log(1 - p_i) - log(1 - p_n)).
        p_i = jax.nn.sigmoid(zi)
        d = (p_i * (jax.nn.log_sigmoid(zi) - jax.nn.log_sigmoid(zn))
             + (1.0 - p_i) * (jax.nn.log_sigmoid(-zi) - jax.nn.log_sigmoid(-zn)))
    else:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    return jnp.mean(d, axis=-1)


def mutual_terms(peer_logits: jax.Array, divergence: str, stop_gradient: bool) -> jax.Array:
    """Per-peer mutual term 1/(N-1) * sum_{i != n} D(p_i, p_n); zeros when N = 1.

    Args:
      peer_logits: [N, B] logits of all peers on one batch.
      divergence: 'mse' or 'kl'.
      stop_gradient: treat the companions' predictions as constants.

    Returns:
      [N] mutual term of each peer.
    """
    num_peers = peer_logits.shape[0]
    if num_peers == 1:
        return jnp.zeros((1,), peer_logits.dtype)
    targets = jax.lax.stop_gradient(peer_logits) if stop_gradient else peer_logits
    d = pairwise_divergence(targets, peer_logits, divergence)
    off_diagonal = 1.0 - jnp.eye(num_peers, dtype=d.dtype)
    return jnp.sum(d * off_diagonal, axis=0) / (num_peers - 1)


def ektf_terms(peer_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-peer knowledge-transfer term of EKTF (Li et al. 2024, arXiv 2411.16122).

    The students' collective decision, p_T = sigmoid(mean_k z_k), is a teacher
    for every student, and every student learns from every other; both MSE
    terms on probabilities, each weighted by an "examination" of this batch,
    score_k = mean_b (1 - |y_b - p_k,b|):

        term_n = N * softmin(score)_n * MSE(p_n, p_T)
                 + sum_{i != n} softmax_{i != n}(score_i - score_n) * MSE(p_n, p_i)

    so weak students listen more to the teacher, and each student listens most
    to the companions that score above it. Teacher, companions and weights are
    constants (stop-gradient). The factor N makes sum_n term_n N times the
    reference's mean over students, matching this module's per-peer sum of BCE
    terms. The reference also flips 5% of the labels at random and shares one
    embedding table between the students; neither is done here (each peer keeps
    its own embeddings).

    Args:
      peer_logits: [N, B] logits of all peers on one batch.
      labels: [B] 0/1 labels.

    Returns:
      [N] term of each peer; zeros when N = 1.
    """
    num_peers = peer_logits.shape[0]
    if num_peers == 1:
        return jnp.zeros((1,), peer_logits.dtype)
    probs = jax.nn.sigmoid(peer_logits)
    constant = jax.lax.stop_gradient(peer_logits)
    teacher = jax.nn.sigmoid(jnp.mean(constant, axis=0))
    to_teacher = jnp.mean((probs - teacher[None, :]) ** 2, axis=-1)
    score = jnp.mean(1.0 - jnp.abs(labels[None, :] - jax.nn.sigmoid(constant)), axis=-1)
    teacher_weight = jax.nn.softmax(-score)
    gap = score[None, :] - score[:, None]  # [n, i] = score_i - score_n
    others = ~jnp.eye(num_peers, dtype=bool)
    peer_weight = jax.nn.softmax(jnp.where(others, gap, -jnp.inf), axis=1)
    to_peers = pairwise_divergence(constant, peer_logits, "mse").T  # [n, i]
    return (num_peers * teacher_weight * to_teacher
            + jnp.sum(jnp.where(others, peer_weight * to_peers, 0.0), axis=1))


def effective_alpha(step: jax.Array, alpha: float, warmup_steps: int) -> jax.Array:
    """alpha, or 0 during the first `warmup_steps` updates."""
    return jnp.where(step < warmup_steps, 0.0, alpha).astype(jnp.float32)


# ---------------------------------------------------------------------------
# The step.


def resolve_peer_execution(peer_execution: str) -> str:
    """'auto' = an unrolled loop on CPU, where it is the faster of the two
    (docs/performance.md, "Measurements behind the code's choices"), vmap elsewhere: on
    GPU/TPU vmap turns a group's matmuls into one batched matmul. Groups of one peer run
    the same program either way.
    """
    if peer_execution not in PEER_EXECUTIONS:
        raise ValueError(f"unknown peer_execution {peer_execution!r}; expected one of {PEER_EXECUTIONS}")
    if peer_execution == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return peer_execution


def _tree_index(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _tree_stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def group_forward(group: PeerGroup, params, batch_stats, ids, dropout_keys, *,
                  train: bool, execution: str):
    """Logits of every peer of a group on one batch.

    Args:
      group: the peer group.
      params, batch_stats: stacked pytrees of the group.
      ids: int32 [B, F] feature ids.
      dropout_keys: [n_g] PRNG keys, one per peer.
      train: training mode (dropout on, batch norm in batch mode).
      execution: 'vmap' or 'unroll' (a Python loop traced into the same jit).

    Returns:
      (logits [n_g, B], new stacked batch_stats).
    """
    has_stats = bool(jax.tree_util.tree_leaves(batch_stats))

    def one(p, s, k):
        variables = {"params": p}
        if has_stats:
            variables["batch_stats"] = s
        if train and has_stats:
            logits, updated = group.model.apply(
                variables, ids, train=True, rngs={"dropout": k}, mutable=["batch_stats"])
            return logits, updated["batch_stats"]
        logits = group.model.apply(variables, ids, train=train, rngs={"dropout": k})
        return logits, s

    if execution == "vmap":
        return jax.vmap(one)(params, batch_stats, dropout_keys)
    outputs = [one(_tree_index(params, i), _tree_index(batch_stats, i), dropout_keys[i])
               for i in range(group.size)]
    logits = jnp.stack([out[0] for out in outputs])
    new_stats = _tree_stack([out[1] for out in outputs]) if has_stats else batch_stats
    return logits, new_stats


def make_loss_fn(peers: Peers, *, divergence: str = "mse", stop_gradient: bool = True,
                 execution: str = "unroll", transfer: str = "pairwise"):
    """Returns loss_fn(params, batch_stats, batch, dropout_keys, alpha).

    loss_fn returns (sum_n loss_n, aux) where aux holds per-peer [N] arrays
    'loss', 'bce', 'mutual', 'l2', the [N, B] 'logits' and the new batch stats.
    transfer: 'pairwise' (`mutual_terms` with `divergence`) or 'ektf' (`ektf_terms`).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    if transfer not in TRANSFERS:
        raise ValueError(f"unknown transfer {transfer!r}; expected one of {TRANSFERS}")

    def loss_fn(params, batch_stats, batch, dropout_keys, alpha):
        logits, new_stats, l2 = [], [], []
        for group, sl, p, s in zip(peers.groups, peers.group_slices(), params, batch_stats):
            group_logits, group_stats = group_forward(
                group, p, s, batch["ids"], dropout_keys[sl], train=True, execution=execution)
            logits.append(group_logits)
            new_stats.append(group_stats)
            l2.append(jax.vmap(functools.partial(regularization.l2_penalty, group.model))(p))
        logits = jnp.concatenate(logits).astype(jnp.float32)
        labels = jnp.broadcast_to(batch["label"].astype(jnp.float32), logits.shape)
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)
        if transfer == "ektf":  # its own weights; targets are always constants
            mutual = ektf_terms(logits, labels[0])
        else:
            mutual = mutual_terms(logits, divergence, stop_gradient)
        l2 = jnp.concatenate(l2)
        per_peer = bce + alpha * mutual + l2
        aux = {"loss": per_peer, "bce": bce, "mutual": mutual, "l2": l2,
               "logits": logits, "batch_stats": tuple(new_stats)}
        return jnp.sum(per_peer), aux

    return loss_fn


def _with_vocab_size(peers: Peers, vocab_size: int) -> Peers:
    """The same peers with tables of `vocab_size` rows (the sparse step's gathered rows, or
    the state's padded tables)."""
    if all(group.model.vocab_size == vocab_size for group in peers.groups):
        return peers
    return dataclasses.replace(peers, groups=tuple(
        dataclasses.replace(g, model=g.model.clone(vocab_size=vocab_size)) for g in peers.groups))


def _apply_updates(peers: Peers, optimizer, params, grads, opt_state, learning_rate):
    """Each group's optimizer step, vmapped over its peers, at each peer's learning rate
    [N]: (new params, new optimizer state, gradient norms), one entry per group."""
    new_params, new_opt_state, grad_norms = [], [], []
    for sl, p, g, o in zip(peers.group_slices(), params, grads, opt_state):

        def update_one(p_i, g_i, o_i, lr_i):
            direction, o_i = optimizer.update(g_i, o_i, p_i)
            p_i = jax.tree_util.tree_map(lambda w, d: w - (lr_i * d).astype(w.dtype), p_i, direction)
            return p_i, o_i, optax.tree.norm(g_i)

        p, o, gn = jax.vmap(update_one)(p, g, o, learning_rate[sl])
        new_params.append(p)
        new_opt_state.append(o)
        grad_norms.append(gn)
    return new_params, new_opt_state, grad_norms


def make_train_step(peers: Peers, optimizer: optax.GradientTransformation, *,
                    divergence: str = "mse", transfer: str = "pairwise",
                    stop_gradient: bool = True, warmup_steps: int = 0,
                    peer_execution: str = "auto", donate: bool = True, mesh=None,
                    state_shardings=None):
    """Builds the one jitted step that updates all peers (big_vision's `update_fn`): the
    one place that owns the step's donation, shardings and non-finite tracking.

    Args:
      peers: the peer groups.
      optimizer: gradient transformation without learning rate (`make_optimizer`); a
        `sparse.SparseOptimizer` makes the step update only the embedding rows of
        the batch.
      divergence: 'mse' or 'kl': D of the pairwise mutual term.
      transfer: 'pairwise' (the sum of D over companions) or 'ektf' (`ektf_terms`).
      stop_gradient: companions' predictions are constants (default).
      warmup_steps: updates with alpha = 0 before the mutual term switches on.
      peer_execution: 'auto', 'vmap' or 'unroll' (see `resolve_peer_execution`).
      donate: donate the state buffers to the step (in-place updates).
      mesh, state_shardings: the device mesh and `sharding.state_shardings`: the state
        stays at its shardings, the batch is split over the mesh's data axis, alpha and
        the measurements are replicated. None: JAX's default placement.

    Returns:
      train_step(state, batch, alpha, non_finite) -> (state, measurements, non_finite).
      alpha is the weight of the mutual term (float32), an argument rather than a
      constant of the program, so that runs differing only in alpha (the control and the
      mutual finetune) share one compiled step. measurements holds per-peer [N] 'loss',
      'bce', 'mutual', 'l2', 'grad_norm' and the scalar 'alpha'. non_finite =
      (first_step [N] int32, -1 while finite; loss [N] at that step), from
      `finite_record` (None: a fresh record, for a caller that does not keep it): the
      host learns which peer went NaN/inf first, and when, without a device-to-host
      transfer every step.
    """
    update = _make_update(peers, optimizer, divergence=divergence, transfer=transfer,
                          stop_gradient=stop_gradient, warmup_steps=warmup_steps,
                          execution=resolve_peer_execution(peer_execution))

    def train_step(state, batch, alpha, non_finite):
        new_state, measurements = update(state, batch, jnp.asarray(alpha, jnp.float32))
        first_step, first_loss = finite_record(peers.size) if non_finite is None else non_finite
        newly = (first_step < 0) & ~jnp.isfinite(measurements["loss"])
        non_finite = (jnp.where(newly, new_state["step"], first_step),
                      jnp.where(newly, measurements["loss"], first_loss))
        return new_state, measurements, non_finite

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(train_step, donate_argnums=donate_argnums)
    rep = sharding.replicated(mesh)
    return jax.jit(train_step, donate_argnums=donate_argnums,
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh), rep, rep),
                   out_shardings=(state_shardings, rep, rep))


def finite_record(num_peers: int) -> tuple[np.ndarray, np.ndarray]:
    """The `non_finite` argument of a first step: no peer's loss has been NaN/inf."""
    return np.full(num_peers, -1, np.int32), np.zeros(num_peers, np.float32)


def _make_update(peers: Peers, optimizer, *, divergence, transfer, stop_gradient,
                 warmup_steps, execution):
    """update(state, batch, alpha) -> (new_state, measurements): the step's computation."""
    row_sparse = isinstance(optimizer, sparse.SparseOptimizer)
    loss_kwargs = dict(divergence=divergence, stop_gradient=stop_gradient, execution=execution,
                       transfer=transfer)
    # The models run on the state's tables as stored, padding rows included.
    loss_fn = make_loss_fn(_with_vocab_size(peers, peers.stored_rows), **loss_kwargs)
    vocab_size = peers.stored_rows

    def update(state, batch, alpha_value):
        step_key = jax.random.fold_in(state["rng"], state["step"])
        dropout_keys = jax.vmap(lambda k: jax.random.fold_in(step_key, k))(jnp.arange(peers.size))
        alpha_now = effective_alpha(state["step"], alpha_value, warmup_steps)
        # The models look up table rows (with QR, two per field), and so do the sparse
        # step's gathers and scatters.
        step_batch = dict(batch, ids=peers.table_ids(batch["ids"]))
        params, opt_state, step_loss_fn = state["params"], state["opt_state"], loss_fn
        if row_sparse:
            # Only the rows of this batch are read, differentiated and written
            # (mlctr/sparse.py). One batch_rows serves every peer: they share the batch.
            rows = sparse.batch_rows(step_batch["ids"], vocab_size)
            params = tuple(sparse.take_table_rows(p, rows.rows, axis=1) for p in params)
            opt_state = tuple(optimizer.take_state_rows(o, rows.rows, axis=1) for o in opt_state)
            step_batch = dict(step_batch, ids=rows.inverse)
            step_loss_fn = make_loss_fn(_with_vocab_size(peers, rows.size), **loss_kwargs)
        grads, aux = jax.grad(step_loss_fn, has_aux=True)(
            params, state["batch_stats"], step_batch, dropout_keys, alpha_now)
        new_params, new_opt_state, grad_norms = _apply_updates(
            peers, optimizer, params, grads, opt_state, state["learning_rate"])
        if row_sparse:
            new_params = [sparse.put_table_rows(full, new, rows.rows, axis=1)
                          for full, new in zip(state["params"], new_params)]
            new_opt_state = [optimizer.put_state_rows(full, new, rows.rows, axis=1)
                             for full, new in zip(state["opt_state"], new_opt_state)]
        new_state = dict(state)
        new_state.update(step=state["step"] + 1, params=tuple(new_params),
                         opt_state=tuple(new_opt_state), batch_stats=aux["batch_stats"])
        measurements = {k: aux[k] for k in ("loss", "bce", "mutual", "l2")}
        measurements["grad_norm"] = jnp.concatenate(grad_norms)
        measurements["alpha"] = alpha_now
        return new_state, measurements

    return update


def make_predict_fn(peers: Peers, *, peer_execution: str = "auto"):
    """jitted predict(params, batch_stats, ids) -> float32 logits [N, B] (eval mode) of
    dataset ids [B, F]."""
    execution = resolve_peer_execution(peer_execution)
    peers = _with_vocab_size(peers, peers.stored_rows)

    def predict(params, batch_stats, ids):
        ids = peers.table_ids(ids)
        logits = []
        for group, p, s in zip(peers.groups, params, batch_stats):
            keys = jax.random.split(jax.random.PRNGKey(0), group.size)  # unused in eval
            group_logits, _ = group_forward(group, p, s, ids, keys, train=False, execution=execution)
            logits.append(group_logits)
        return jnp.concatenate(logits).astype(jnp.float32)

    return jax.jit(predict)


# ---------------------------------------------------------------------------
# Per-peer views of the stacked state (checkpoints are keyed by peer name).


def peer_variables(peers: Peers, params, batch_stats) -> dict[str, dict]:
    """{peer name: {'params': ..., 'batch_stats': ...}} unstacked from the groups, tables
    without their padding rows."""
    out = {}
    for group, p, s in zip(peers.groups, params, batch_stats):
        p = tables_with_rows(p, group.model.vocab_size, axis=1)
        for i, name in enumerate(group.names):
            out[name] = {"params": _tree_index(p, i), "batch_stats": _tree_index(s, i)}
    return out


def stack_peer_variables(peers: Peers, variables: dict[str, dict]):
    """Inverse of `peer_variables`: (params, batch_stats) tuples over groups, tables padded
    to `peers.stored_rows`."""
    params, batch_stats = [], []
    for group in peers.groups:
        missing = [name for name in group.names if name not in variables]
        if missing:
            raise KeyError(f"no weights for peer(s) {missing}; available: {sorted(variables)}")
        params.append(tables_with_rows(_tree_stack([variables[name]["params"]
                                                    for name in group.names]),
                                       peers.stored_rows, axis=1))
        batch_stats.append(_tree_stack([variables[name]["batch_stats"] for name in group.names]))
    return tuple(params), tuple(batch_stats)
