"""FinalMLP, FinalNet, GDCN and DCNv3 as peers in the one jitted step, and the auxiliary-loss
channel (mlctr/models/auxiliary.py): the stacked step equals per-peer updates written out
here, Tri-BCE and FinalNet's block terms included, the mutual term on the final logits only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlctr import mutual
from mlctr import peer_groups
from mlctr import sparse
from mlctr.models import auxiliary
from mlctr.models import regularization

VOCAB, FIELDS, BATCH = 200, 4, 32
COMMON = dict(embedding_dim=4, embedding_regularizer=1e-3, net_regularizer=1e-4)
MODELS = {
    "finalmlp": dict(model="finalmlp", mlp1_hidden_units=(8, 6), mlp2_hidden_units=(4,),
                     num_heads=2, mlp1_dropout=0.1, **COMMON),
    "finalnet": dict(model="finalnet", batch_norm=False, block1_hidden_units=(6, 4),
                     block2_hidden_units=(4,), block1_dropout=0.1, **COMMON),
    "gdcn": dict(model="gdcn", dnn_hidden_units=(8,), num_cross_layers=2, **COMMON),
    "dcnv3": dict(model="dcnv3", num_deep_cross_layers=2, num_shallow_cross_layers=2,
                  num_heads=2, **COMMON),
}


def make_batch(seed):
    rng = np.random.default_rng(seed)
    return {"ids": jnp.asarray(rng.integers(0, VOCAB, (BATCH, FIELDS)), jnp.int32),
            "label": jnp.asarray(rng.integers(0, 2, BATCH), jnp.float32)}


def setup(spec):
    peers = peer_groups.build_peers(spec, MODELS, vocab_size=VOCAB, num_fields=FIELDS)
    optimizer = peer_groups.make_optimizer(grad_clip_norm=10.0)
    state = peer_groups.init_state(peers, jax.random.PRNGKey(0), jnp.zeros((2, FIELDS), jnp.int32),
                              optimizer, 1e-2)
    return peers, optimizer, state


def _bce(z, y):
    """Mean sigmoid BCE against (soft) targets y, written out."""
    p = jax.nn.sigmoid(z)
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))


def reference_supervised_loss(model, z, aux, y):
    """The supervised term of one peer, from the papers: BCE of the final logits plus,
    for DCNv3, Tri-BCE's sub-network terms and for FinalNet 2B each block's BCE against the
    final prediction (a constant)."""
    loss = _bce(z, y)
    if type(model).__name__ == "DCNv3":
        for name in ("deep_logit", "shallow_logit"):
            sub = _bce(aux[name], y)
            loss = loss + jnp.maximum(sub - _bce(z, y), 0.0) * sub
    elif type(model).__name__ == "FinalNet":
        target = jax.lax.stop_gradient(jax.nn.sigmoid(z))
        loss = loss + _bce(aux["logit1"], target) + _bce(aux["logit2"], target)
    return loss


def reference_step(peers, optimizer, state, batch, alpha):
    """Per-peer updates one by one (mse divergence), companions' predictions held fixed."""
    names = peers.names
    step_key = jax.random.fold_in(state["rng"], state["step"])
    keys = [jax.random.fold_in(step_key, k) for k in range(len(names))]
    per_peer = peer_groups.peer_variables(peers, state["params"], state["batch_stats"])
    models = {name: group.model for group in peers.groups for name in group.names}

    def forward(name, params, key):
        z, collections = models[name].apply({"params": params}, batch["ids"], train=True,
                                            rngs={"dropout": key}, mutable=["aux_logits"])
        return z, dict(collections.get("aux_logits", {}))

    all_logits = [forward(n, per_peer[n]["params"], keys[k])[0] for k, n in enumerate(names)]
    new = {}
    for k, name in enumerate(names):
        def loss(params):
            z, aux = forward(name, params, keys[k])
            supervised = reference_supervised_loss(models[name], z, aux, batch["label"])
            term = sum(jnp.mean((jax.nn.sigmoid(all_logits[i]) - jax.nn.sigmoid(z)) ** 2)
                       for i in range(len(names)) if i != k) / (len(names) - 1)
            return supervised + alpha * term + regularization.l2_penalty(models[name], params)

        params = per_peer[name]["params"]
        grads = jax.jit(jax.grad(loss))(params)
        group_index = [i for i, g in enumerate(peers.groups) if name in g.names][0]
        slot = peers.groups[group_index].names.index(name)
        opt_state = jax.tree_util.tree_map(lambda x: x[slot], state["opt_state"][group_index])
        direction, _ = optimizer.update(grads, opt_state, params)
        new[name] = jax.tree_util.tree_map(lambda p, d: p - 1e-2 * d, params, direction)
    return new


@pytest.mark.parametrize("spec,execution", [("dcnv3*2,finalnet", "vmap"),
                                            ("finalmlp,gdcn*2,dcnv3", "unroll")])
def test_step_equals_per_peer_updates_with_auxiliary_losses(spec, execution):
    peers, optimizer, state = setup(spec)
    warm = mutual.make_train_step(peers, optimizer, peer_execution=execution, donate=False)
    state, _, _ = warm(state, make_batch(0), 0.0, None)  # the peers now disagree: a non-zero mutual term
    batch = make_batch(1)
    expected = reference_step(peers, optimizer, state, batch, alpha=0.7)
    step = mutual.make_train_step(peers, optimizer, peer_execution=execution, donate=False)
    new_state, measurements, _ = step(state, batch, 0.7, None)
    assert np.all(np.asarray(measurements["mutual"]) > 0)
    got = peer_groups.peer_variables(peers, new_state["params"], new_state["batch_stats"])
    for name in peers.names:
        jax.tree_util.tree_map(
            lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6),
            got[name]["params"], expected[name])


def test_auxiliary_terms_enter_bce_and_not_the_mutual_term():
    """'bce' = BCE(final) + the model's auxiliary terms, > the plain BCE for DCNv3 when a
    sub-network is worse than the whole; 'mutual' is computed from the final logits alone;
    a model without auxiliary loss has exactly its plain BCE."""
    peers, _, state = setup("dcnv3,gdcn")
    batch = make_batch(2)
    loss_fn = mutual.make_loss_fn(peers, execution="unroll")
    keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.PRNGKey(3), k))(jnp.arange(2))
    _, aux = jax.jit(loss_fn)(state["params"], state["batch_stats"], batch, keys, 1.0)
    logits = aux["logits"]
    plain = jnp.mean(jax.nn.softplus(logits) - logits * batch["label"], axis=-1)
    np.testing.assert_allclose(aux["bce"][1], plain[1], rtol=1e-5)
    # BCE is convex in the logit, so one of DCNv3's two halves is worse than their mean.
    assert float(aux["bce"][0]) > float(plain[0]) + 1e-6
    expected_mutual = jnp.mean((jax.nn.sigmoid(logits[0]) - jax.nn.sigmoid(logits[1])) ** 2)
    np.testing.assert_allclose(aux["mutual"], [expected_mutual, expected_mutual], rtol=1e-5)


def test_tri_bce_weights_written_out():
    z = jnp.zeros(4)
    y = jnp.ones(4)
    good, bad = jnp.full(4, 2.0), jnp.full(4, -1.0)  # BCE 0.127 < 0.693 < 1.313
    got = auxiliary.tri_bce(z, [good, bad], y)
    l, l_bad = np.log(2), np.log1p(np.e)
    np.testing.assert_allclose(float(got), (l_bad - l) * l_bad, rtol=1e-5)


def test_predict_ignores_the_auxiliary_channel():
    peers, _, state = setup("dcnv3,finalnet")
    batch = make_batch(4)
    predict = mutual.make_predict_fn(peers, peer_execution="unroll")
    logits = predict(state["params"], state["batch_stats"], batch["ids"])
    per_peer = peer_groups.peer_variables(peers, state["params"], state["batch_stats"])
    for k, group in enumerate(peers.groups):
        expected = group.model.apply({"params": per_peer[group.names[0]]["params"]},
                                     batch["ids"], train=False)
        np.testing.assert_allclose(logits[k], expected, rtol=1e-6)


def test_sparse_sgd_step_equals_dense_with_auxiliary_losses():
    """The row-sparse step runs the models on the batch's gathered rows (a clone with K
    rows): the auxiliary channel goes through it unchanged. Tables by SGD, the rest by Adam,
    no embedding L2 and no dropout: the sparse step equals the dense step."""
    models = {
        "dcnv3": dict(model="dcnv3", embedding_dim=4, num_deep_cross_layers=2,
                      num_shallow_cross_layers=1, deep_net_dropout=0.0, shallow_net_dropout=0.0,
                      embedding_regularizer=0.0),
        "finalnet": dict(model="finalnet", embedding_dim=4, batch_norm=False,
                         block1_hidden_units=(6, 4), block2_hidden_units=(4,),
                         block1_dropout=0.0, block2_dropout=0.0, embedding_regularizer=0.0),
    }
    peers = peer_groups.build_peers("dcnv3,finalnet", models, vocab_size=VOCAB, num_fields=FIELDS)
    sparse_opt = peer_groups.make_optimizer(10.0, embedding_optimizer="sgd")
    state = peer_groups.init_state(peers, jax.random.PRNGKey(0), jnp.zeros((2, FIELDS), jnp.int32),
                              sparse_opt, 1e-2)
    dense_opt = optax.chain(optax.clip_by_global_norm(10.0), optax.masked(
        optax.scale_by_adam(), lambda p: jax.tree_util.tree_map(
            lambda t: not t, sparse.table_mask(p))))
    dense_state = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), state)
    dense_state["opt_state"] = tuple(jax.vmap(dense_opt.init)(p) for p in state["params"])
    sparse_step = mutual.make_train_step(peers, sparse_opt, donate=False)
    dense_step = mutual.make_train_step(peers, dense_opt, donate=False)
    for i in range(2):
        state, ms, _ = sparse_step(state, make_batch(10 + i), 1.0, None)
        dense_state, md, _ = dense_step(dense_state, make_batch(10 + i), 1.0, None)
    np.testing.assert_allclose(ms["bce"], md["bce"], rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           state["params"], dense_state["params"])
