"""The mutual-learning loss and the one jitted step for all peers.

The peers and their state are built by mlctr.peer_groups.

Loss of peer n (N peers, logits z_n, probabilities p_n = sigmoid(z_n)):

    loss_n = BCE(y, z_n) + alpha / (N - 1) * sum_{i != n} D(p_i, p_n) + L2_n

  * A model with auxiliary losses on its sub-networks (DCNv3's Tri-BCE, FinalNet's two
    blocks; mlctr/models/auxiliary.py) adds its `auxiliary_loss` to its BCE term (and to
    the 'bce' measurement); the mutual term stays on the final logits z_n.

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
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlctr import peer_groups
from mlctr import sharding
from mlctr import sparse
from mlctr.models import auxiliary
from mlctr.models import regularization

DIVERGENCES = ("mse", "kl")
TRANSFERS = ("pairwise", "ektf")  # the mutual term: sum of D over companions | EKTF's
PEER_EXECUTIONS = ("auto", "vmap", "unroll")


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


def group_forward(group: peer_groups.PeerGroup, params, batch_stats, ids, dropout_keys, *,
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
      (logits [n_g, B], new stacked batch_stats, auxiliary logits): the last is
      {name: [n_g, B]} the model records for its `auxiliary_loss` when training
      (mlctr/models/auxiliary.py), {} for a model without one or in eval mode.
    """
    has_stats = bool(jax.tree_util.tree_leaves(batch_stats))
    with_aux = train and auxiliary.has_auxiliary_loss(group.model)

    def one(p, s, k):
        variables = {"params": p}
        if has_stats:
            variables["batch_stats"] = s
        if with_aux:
            mutable = [auxiliary.COLLECTION] + (["batch_stats"] if has_stats else [])
            logits, updated = group.model.apply(variables, ids, train=True, rngs={"dropout": k},
                                                mutable=mutable)
            return (logits, updated["batch_stats"] if has_stats else s,
                    dict(updated.get(auxiliary.COLLECTION, {})))
        if train and has_stats:
            logits, updated = group.model.apply(
                variables, ids, train=True, rngs={"dropout": k}, mutable=["batch_stats"])
            return logits, updated["batch_stats"], {}
        logits = group.model.apply(variables, ids, train=train, rngs={"dropout": k})
        return logits, s, {}

    if execution == "vmap":
        return jax.vmap(one)(params, batch_stats, dropout_keys)
    outputs = [one(peer_groups.tree_index(params, i), peer_groups.tree_index(batch_stats, i), dropout_keys[i])
               for i in range(group.size)]
    logits = jnp.stack([out[0] for out in outputs])
    new_stats = peer_groups.tree_stack([out[1] for out in outputs]) if has_stats else batch_stats
    return logits, new_stats, peer_groups.tree_stack([out[2] for out in outputs]) if with_aux else {}


def group_auxiliary_loss(group: peer_groups.PeerGroup, logits, aux_logits, labels) -> jax.Array:
    """[n_g] `auxiliary_loss` of each peer of a group (mlctr/models/auxiliary.py) from its
    final logits [n_g, B], recorded auxiliary logits {name: [n_g, B]} and the labels [B]."""
    return jax.vmap(lambda z, aux: group.model.auxiliary_loss(z, aux, labels))(
        logits.astype(jnp.float32), aux_logits)


def make_loss_fn(peers: peer_groups.Peers, *, divergence: str = "mse", stop_gradient: bool = True,
                 execution: str = "unroll", transfer: str = "pairwise"):
    """Returns loss_fn(params, batch_stats, batch, dropout_keys, alpha).

    loss_fn returns (sum_n loss_n, aux) where aux holds per-peer [N] arrays
    'loss', 'bce' (with a model's auxiliary terms), 'mutual', 'l2', the [N, B] final
    'logits' and the new batch stats.
    transfer: 'pairwise' (`mutual_terms` with `divergence`) or 'ektf' (`ektf_terms`).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    if transfer not in TRANSFERS:
        raise ValueError(f"unknown transfer {transfer!r}; expected one of {TRANSFERS}")

    with_aux = any(auxiliary.has_auxiliary_loss(group.model) for group in peers.groups)

    def loss_fn(params, batch_stats, batch, dropout_keys, alpha):
        logits, new_stats, l2, aux_terms = [], [], [], []
        for group, sl, p, s in zip(peers.groups, peers.group_slices(), params, batch_stats):
            group_logits, group_stats, group_aux = group_forward(
                group, p, s, batch["ids"], dropout_keys[sl], train=True, execution=execution)
            logits.append(group_logits)
            new_stats.append(group_stats)
            l2.append(jax.vmap(functools.partial(regularization.l2_penalty, group.model))(p))
            aux_terms.append(group_auxiliary_loss(group, group_logits, group_aux,
                                                  batch["label"].astype(jnp.float32))
                             if group_aux else jnp.zeros((group.size,), jnp.float32))
        logits = jnp.concatenate(logits).astype(jnp.float32)
        labels = jnp.broadcast_to(batch["label"].astype(jnp.float32), logits.shape)
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)
        if with_aux:  # only then: the other runs keep their exact arithmetic
            bce = bce + jnp.concatenate(aux_terms)
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


def _with_vocab_size(peers: peer_groups.Peers, vocab_size: int) -> peer_groups.Peers:
    """The same peers with tables of `vocab_size` rows (the sparse step's gathered rows, or
    the state's padded tables)."""
    if all(group.model.vocab_size == vocab_size for group in peers.groups):
        return peers
    return dataclasses.replace(peers, groups=tuple(
        dataclasses.replace(g, model=g.model.clone(vocab_size=vocab_size)) for g in peers.groups))


def _apply_updates(peers: peer_groups.Peers, optimizer, params, grads, opt_state, learning_rate):
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


def keep_frozen_peers(peers: peer_groups.Peers, learning_rate: jax.Array, new, old):
    """`new` for every peer whose learning rate is > 0, `old` (bit for bit) for the others.

    Args:
      peers: the peer groups.
      learning_rate: float32 [N], the state's per-peer learning rates (0: frozen).
      new, old: tuples of per-group stacked trees (params, optimizer state, batch stats),
        each leaf with the group's peers on its leading axis.

    Returns:
      A tuple like `new`: each entry a list over groups.
    """
    out = []
    for new_groups, old_groups in zip(new, old):
        picked = []
        for sl, n, o in zip(peers.group_slices(), new_groups, old_groups):
            live = learning_rate[sl] > 0

            def pick(a, b, live=live):
                return jnp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

            picked.append(jax.tree_util.tree_map(pick, n, o))
        out.append(picked)
    return tuple(out)


def make_train_step(peers: peer_groups.Peers, optimizer: optax.GradientTransformation, *,
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


def _make_update(peers: peer_groups.Peers, optimizer, *, divergence, transfer, stop_gradient,
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
        # A peer at learning rate 0 (stopped early, or a frozen teacher) keeps all of its
        # state: Adam's moments and batch norm's running statistics would move too.
        new_params, new_opt_state, new_stats = keep_frozen_peers(
            peers, state["learning_rate"], (new_params, new_opt_state, aux["batch_stats"]),
            (state["params"], state["opt_state"], state["batch_stats"]))
        new_state = dict(state)
        new_state.update(step=state["step"] + 1, params=tuple(new_params),
                         opt_state=tuple(new_opt_state), batch_stats=tuple(new_stats))
        measurements = {k: aux[k] for k in ("loss", "bce", "mutual", "l2")}
        measurements["grad_norm"] = jnp.concatenate(grad_norms)
        measurements["alpha"] = alpha_now
        return new_state, measurements

    return update


def make_predict_fn(peers: peer_groups.Peers, *, peer_execution: str = "auto"):
    """jitted predict(params, batch_stats, ids) -> float32 logits [N, B] (eval mode) of
    dataset ids [B, F]."""
    execution = resolve_peer_execution(peer_execution)
    peers = _with_vocab_size(peers, peers.stored_rows)

    def predict(params, batch_stats, ids):
        ids = peers.table_ids(ids)
        logits = []
        for group, p, s in zip(peers.groups, params, batch_stats):
            keys = jax.random.split(jax.random.PRNGKey(0), group.size)  # unused in eval
            group_logits, _, _ = group_forward(group, p, s, ids, keys, train=False,
                                               execution=execution)
            logits.append(group_logits)
        return jnp.concatenate(logits).astype(jnp.float32)

    return jax.jit(predict)


def make_batch_stats_fn(peers: peer_groups.Peers, *, peer_execution: str = "auto"):
    """jitted stats(params, batch_stats, ids) -> each group's batch-norm statistics of one
    batch of dataset ids [B, F], in train mode (as a train step normalises with them).

    Flax's BatchNorm returns `momentum * running + (1 - momentum) * batch` for the running
    statistics it is given; this passes zeros, so the result is `(1 - momentum)` times the
    batch's mean and (biased) variance, and `mlctr.run.batch_stats` divides that factor
    out. Groups without batch norm return their empty trees. Dropout uses fixed keys.
    """
    execution = resolve_peer_execution(peer_execution)
    peers = _with_vocab_size(peers, peers.stored_rows)

    def stats(params, batch_stats, ids):
        ids = peers.table_ids(ids)
        out = []
        for group, p, s in zip(peers.groups, params, batch_stats):
            keys = jax.random.split(jax.random.PRNGKey(0), group.size)
            zeros = jax.tree_util.tree_map(jnp.zeros_like, s)
            _, new, _ = group_forward(group, p, zeros, ids, keys, train=True,
                                      execution=execution)
            out.append(new)
        return tuple(out)

    return jax.jit(stats)


# ---------------------------------------------------------------------------
# Per-peer views of the stacked state (checkpoints are keyed by peer name).
