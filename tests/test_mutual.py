"""Tests of the mutual loss and the one jitted step for all peers (mlctr/mutual.py)."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mlctr import mutual
from mlctr import peer_groups
from mlctr import sharding
from mlctr import sparse
from mlctr.models import qr
from mlctr.models import regularization

VOCAB, FIELDS, BATCH = 300, 5, 64
TINY = dict(embedding_dim=4, dnn_hidden_units=(8, 8), net_dropout=0.1, batch_norm=False,
            embedding_regularizer=1e-3, net_regularizer=1e-4)
MODELS = {
    "deepfm": dict(model="deepfm", **TINY),
    "dcn": dict(model="dcn", num_cross_layers=2, **TINY),
    "deepfm_bn": dict(model="deepfm", **{**TINY, "batch_norm": True}),
}


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"ids": jnp.asarray(rng.integers(0, VOCAB, (BATCH, FIELDS)), jnp.int32),
            "label": jnp.asarray(rng.integers(0, 2, BATCH), jnp.float32)}


def setup(spec, lr=1e-2, seed=0, same_init=False):
    peers = peer_groups.build_peers(spec, MODELS, vocab_size=VOCAB, num_fields=FIELDS)
    optimizer = peer_groups.make_optimizer(grad_clip_norm=10.0)
    state = peer_groups.init_state(peers, jax.random.PRNGKey(seed), jnp.zeros((2, FIELDS), jnp.int32),
                              optimizer, lr, same_init=same_init)
    return peers, optimizer, state


def copy_state(state):
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), state)


def reference_step(peers, optimizer, state, batch, *, alpha, divergence):
    """Per-peer updates computed one by one, companions' predictions held fixed."""
    names = peers.names
    step_key = jax.random.fold_in(state["rng"], state["step"])
    keys = [jax.random.fold_in(step_key, k) for k in range(len(names))]
    per_peer = peer_groups.peer_variables(peers, state["params"], state["batch_stats"])
    models = {name: group.model for group in peers.groups for name in group.names}

    def logits_of(name, params, key):
        variables = {"params": params}
        stats = per_peer[name]["batch_stats"]
        if jax.tree_util.tree_leaves(stats):
            variables["batch_stats"] = stats
            out, _ = models[name].apply(variables, batch["ids"], train=True,
                                        rngs={"dropout": key}, mutable=["batch_stats"])
            return out
        return models[name].apply(variables, batch["ids"], train=True, rngs={"dropout": key})

    logits_of = jax.jit(logits_of, static_argnums=0)
    all_logits = jnp.stack([logits_of(n, per_peer[n]["params"], keys[k]) for k, n in enumerate(names)])
    n_peers = len(names)
    lrs = np.asarray(state["learning_rate"])
    new = {}
    for k, name in enumerate(names):
        others = [all_logits[i] for i in range(n_peers) if i != k]

        def loss(params):
            z = logits_of(name, params, keys[k])
            bce = jnp.mean(optax.sigmoid_binary_cross_entropy(z, batch["label"]))
            term = 0.0
            for zi in others:
                if divergence == "mse":
                    term += jnp.mean((jax.nn.sigmoid(zi) - jax.nn.sigmoid(z)) ** 2)
                else:
                    pi = jax.nn.sigmoid(zi)
                    term += jnp.mean(pi * (jnp.log(pi) - jnp.log(jax.nn.sigmoid(z)))
                                     + (1 - pi) * (jnp.log(1 - pi) - jnp.log(1 - jax.nn.sigmoid(z))))
            mutual_term = term / (n_peers - 1) if n_peers > 1 else 0.0
            return bce + alpha * mutual_term + regularization.l2_penalty(models[name], params)

        params = per_peer[name]["params"]
        grads = jax.jit(jax.grad(loss))(params)
        group_index = [i for i, g in enumerate(peers.groups) if name in g.names][0]
        slot = peers.groups[group_index].names.index(name)
        opt_state = jax.tree_util.tree_map(lambda x: x[slot], state["opt_state"][group_index])
        direction, _ = optimizer.update(grads, opt_state, params)
        new[name] = jax.tree_util.tree_map(lambda p, d: p - lrs[k] * d, params, direction)
    return new


def assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("divergence,execution", [("mse", "vmap"), ("kl", "unroll")])
def test_step_equals_per_peer_updates(divergence, execution):
    peers, optimizer, state = setup("deepfm*2,dcn")
    assert peers.names == ("deepfm_0", "deepfm_1", "dcn")
    assert_mutual_step_matches_reference(peers, optimizer, state, make_batch(), make_batch(1),
                                         divergence=divergence, execution=execution)


def assert_mutual_step_matches_reference(peers, optimizer, state, warm_batch, batch, *,
                                         divergence, execution, reference_batch=None):
    """After one step at alpha 0 (so the peers disagree and the mutual term is non-zero),
    the jitted step at alpha 0.7 on `batch` equals `reference_step` on `reference_batch`
    (default `batch`)."""
    warm = mutual.make_train_step(peers, optimizer, peer_execution=execution, donate=False)
    state, _, _ = warm(state, warm_batch, 0.0, None)
    expected = reference_step(peers, optimizer, state,
                              batch if reference_batch is None else reference_batch,
                              alpha=0.7, divergence=divergence)
    step = mutual.make_train_step(peers, optimizer, divergence=divergence,
                                  peer_execution=execution, donate=False)
    new_state, m, _ = step(state, batch, 0.7, None)
    assert np.all(np.asarray(m["mutual"]) > 0)
    got = peer_groups.peer_variables(peers, new_state["params"], new_state["batch_stats"])
    for name in peers.names:
        assert_trees_close(got[name]["params"], expected[name])


def test_batch_norm_peers_update_their_own_stats():
    peers, _, state = setup("deepfm_bn*2")
    # Plain gradient steps: Adam would blow the ~1e-9 rounding noise of the
    # (mathematically zero) gradient of a bias feeding batch norm up to +-lr.
    optimizer = optax.identity()
    state["opt_state"] = tuple(jax.vmap(optimizer.init)(p) for p in state["params"])
    step = mutual.make_train_step(peers, optimizer, peer_execution="vmap", donate=False)
    new_state, _, _ = step(state, make_batch(), 1.0, None)
    expected = reference_step(peers, optimizer, state, make_batch(), alpha=1.0, divergence="mse")
    got = peer_groups.peer_variables(peers, new_state["params"], new_state["batch_stats"])
    for name in peers.names:
        assert_trees_close(got[name]["params"], expected[name])
    stats = jax.tree_util.tree_leaves(new_state["batch_stats"])
    assert stats and not all(np.allclose(a, b) for a, b in
                             zip(stats, jax.tree_util.tree_leaves(state["batch_stats"])))


def test_vmap_and_unroll_agree():
    peers, optimizer, state = setup("deepfm*2,dcn")
    results = []
    for execution in ("vmap", "unroll"):
        step = mutual.make_train_step(peers, optimizer, peer_execution=execution,
                                      donate=False)
        s = copy_state(state)
        for i in range(3):
            s, _, _ = step(s, make_batch(i), 1.0, None)
        results.append(s["params"])
    assert_trees_close(results[0], results[1])


def test_single_peer_is_plain_bce_training():
    peers, optimizer, state = setup("deepfm", lr=1e-2)
    step = mutual.make_train_step(peers, optimizer, donate=False)
    model = peers.groups[0].model
    params = jax.tree_util.tree_map(lambda x: x[0], state["params"][0])
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-2))
    opt_state = tx.init(params)
    for i in range(3):
        batch = make_batch(i)
        key = jax.random.fold_in(jax.random.fold_in(state["rng"], state["step"]), 0)

        def loss(p):
            z = model.apply({"params": p}, batch["ids"], train=True, rngs={"dropout": key})
            return (jnp.mean(optax.sigmoid_binary_cross_entropy(z, batch["label"]))
                    + regularization.l2_penalty(model, p))

        updates, opt_state = tx.update(jax.jit(jax.grad(loss))(params), opt_state, params)
        params = optax.apply_updates(params, updates)
        state, m, _ = step(state, batch, 1.0, None)
        assert float(m["mutual"][0]) == 0.0
    # Adam turns rounding noise in near-zero gradients into steps of up to lr:
    # compare at a tolerance well below one step (lr = 1e-2).
    assert_trees_close(jax.tree_util.tree_map(lambda x: x[0], state["params"][0]), params,
                       atol=1e-4)


def test_alpha_zero_makes_peers_independent():
    peers, optimizer, state = setup("deepfm*2")
    pair = mutual.make_train_step(peers, optimizer, donate=False)
    s2 = copy_state(state)
    for i in range(2):
        s2, _, _ = pair(s2, make_batch(i), 0.0, None)
    # Peer 0 alone, same weights and same dropout key (peer index 0).
    solo_peers, _, solo = setup("deepfm")
    solo["params"] = (jax.tree_util.tree_map(lambda x: x[:1], state["params"][0]),)
    solo["opt_state"] = (jax.tree_util.tree_map(lambda x: x[:1], state["opt_state"][0]),)
    solo["rng"] = state["rng"]
    single = mutual.make_train_step(solo_peers, optimizer, donate=False)
    for i in range(2):
        solo, _, _ = single(solo, make_batch(i), 1.0, None)
    assert_trees_close(jax.tree_util.tree_map(lambda x: x[0], s2["params"][0]),
                       jax.tree_util.tree_map(lambda x: x[0], solo["params"][0]))


def test_peers_start_different_unless_asked():
    _, _, state = setup("deepfm*2")
    table = state["params"][0]["embedding"]["embedding_table"] if "embedding" in state["params"][0] \
        else jax.tree_util.tree_leaves(state["params"][0])[0]
    assert not np.allclose(table[0], table[1])
    _, _, same = setup("deepfm*2", same_init=True)
    for leaf in jax.tree_util.tree_leaves(same["params"][0]):
        np.testing.assert_array_equal(leaf[0], leaf[1])


def test_same_seed_bitwise_identical_run():
    runs = []
    for _ in range(2):
        peers, optimizer, state = setup("deepfm,dcn")
        step = mutual.make_train_step(peers, optimizer)
        for i in range(3):
            state, m, _ = step(state, make_batch(i), 1.0, None)
        runs.append((jax.device_get(state["params"]), np.asarray(m["loss"])))
    jax.tree_util.tree_map(np.testing.assert_array_equal, runs[0], runs[1])


def test_warmup_keeps_alpha_zero():
    peers, optimizer, state = setup("deepfm,dcn")
    step = mutual.make_train_step(peers, optimizer, warmup_steps=2, donate=False)
    alphas = []
    for i in range(3):
        state, m, _ = step(state, make_batch(i), 1.0, None)
        alphas.append(float(m["alpha"]))
    assert alphas == [0.0, 0.0, 1.0]


def _hand_gradient(z, y, alpha, divergence):
    """d/dz of sum_n [BCE_n + alpha/(N-1) sum_{i!=n} D(p_i, p_n)], gradients both ways."""
    n_peers, batch = z.shape
    p = 1 / (1 + np.exp(-z))
    grad = (p - y) / batch
    c = alpha / (n_peers - 1) / batch
    for n in range(n_peers):
        for i in range(n_peers):
            if i == n:
                continue
            if divergence == "mse":
                # own term (p_i - p_n)^2 and, as a target, (p_n - p_i)^2 in peer i's loss
                grad[n] += c * 4 * (p[n] - p[i]) * p[n] * (1 - p[n])
            else:
                # own KL(p_i||p_n): p_n - p_i; as target in KL(p_n||p_i): p_n(1-p_n)(z_n - z_i)
                grad[n] += c * ((p[n] - p[i]) + p[n] * (1 - p[n]) * (z[n] - z[i]))
    return grad


@pytest.mark.parametrize("divergence", ["mse", "kl"])
def test_two_way_gradient_matches_hand_derivation(divergence):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(3, 16))
    y = rng.integers(0, 2, 16).astype(np.float64)
    alpha = 0.6

    def total(logits):
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=-1)
        return jnp.sum(bce + alpha * mutual.mutual_terms(logits, divergence, stop_gradient=False))

    with jax.enable_x64(True):
        got = np.asarray(jax.grad(total)(jnp.asarray(z)))
    np.testing.assert_allclose(got, _hand_gradient(z, y, alpha, divergence), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("divergence", ["mse", "kl"])
def test_stop_gradient_gradient_is_own_terms_only(divergence):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3, 8))
    with jax.enable_x64(True):
        g = np.asarray(jax.grad(lambda l: jnp.sum(mutual.mutual_terms(l, divergence, True)))(
            jnp.asarray(z)))
    p = 1 / (1 + np.exp(-z))
    expected = np.zeros_like(z)
    for n in range(3):
        for i in range(3):
            if i != n:
                own = 2 * (p[n] - p[i]) * p[n] * (1 - p[n]) if divergence == "mse" else p[n] - p[i]
                expected[n] += own / 2 / 8
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-12)


def test_kl_matches_bernoulli_definition():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(2, 10))
    d = np.asarray(mutual.pairwise_divergence(jnp.asarray(z), jnp.asarray(z), "kl"))
    p = 1 / (1 + np.exp(-z))
    kl01 = np.mean(p[0] * np.log(p[0] / p[1]) + (1 - p[0]) * np.log((1 - p[0]) / (1 - p[1])))
    np.testing.assert_allclose(d[0, 1], kl01, rtol=1e-5)
    np.testing.assert_allclose(np.diag(d), 0.0, atol=1e-7)


def test_peer_spec_parsing_and_errors():
    assert peer_groups.parse_peer_spec("deepfm*2+dcn") == ["deepfm", "deepfm", "dcn"]
    with pytest.raises(ValueError, match="COUNT"):
        peer_groups.parse_peer_spec("deepfm*x")
    with pytest.raises(ValueError, match="no hyperparameter set"):
        peer_groups.build_peers("nosuchmodel", MODELS, vocab_size=VOCAB, num_fields=FIELDS)
    with pytest.raises(ValueError, match="divergence"):
        mutual.make_loss_fn(peer_groups.build_peers("deepfm", MODELS, vocab_size=VOCAB,
                                               num_fields=FIELDS), divergence="js")


def test_peer_variables_round_trip():
    peers, _, state = setup("deepfm*2,dcn")
    per_peer = peer_groups.peer_variables(peers, state["params"], state["batch_stats"])
    assert set(per_peer) == {"deepfm_0", "deepfm_1", "dcn"}
    params, stats = peer_groups.stack_peer_variables(peers, per_peer)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, state["params"])


# ---------------------------------------------------------------------------
# Quotient-remainder embeddings: the step and predict function take dataset ids and look
# up each field's quotient and remainder rows (mlctr/models/qr.py).

QR_SIZES = (100, 60, 3, 100, 37)  # VOCAB ids over FIELDS fields
QR_FIELDS = [{"vocab_size": s, "offset": int(o)}
             for s, o in zip(QR_SIZES, np.cumsum((0,) + QR_SIZES[:-1]))]


def qr_batch(seed=0, size=BATCH):
    """A batch of dataset ids, each column inside its own field."""
    rng = np.random.default_rng(seed)
    offsets = np.array([f["offset"] for f in QR_FIELDS])
    return {"ids": jnp.asarray(offsets + rng.integers(0, QR_SIZES, (size, FIELDS)), jnp.int32),
            "label": jnp.asarray(rng.integers(0, 2, size), jnp.float32)}


def qr_setup(spec, *, combiner="product", lr=1e-2, table_row_multiple=1, **optimizer_kw):
    layout = qr.QRLayout.from_fields(QR_FIELDS, 8, combiner)
    peers = peer_groups.build_peers(spec, MODELS, vocab_size=VOCAB, num_fields=FIELDS,
                               table_row_multiple=table_row_multiple, qr_layout=layout)
    optimizer = peer_groups.make_optimizer(**optimizer_kw)
    state = peer_groups.init_state(peers, jax.random.PRNGKey(0), jnp.zeros((2, FIELDS), jnp.int32),
                              optimizer, lr)
    return layout, peers, optimizer, state


def with_rows(layout, batch):
    """`batch` with the table rows the host-side (numpy) layout gives."""
    return dict(batch, ids=jnp.asarray(layout.rows(np.asarray(batch["ids"]))))


@pytest.mark.parametrize("combiner", ["product", "sum"])
def test_qr_step_equals_per_peer_updates_on_numpy_rows(combiner):
    layout, peers, optimizer, state = qr_setup("deepfm*2,dcn", combiner=combiner,
                                               grad_clip_norm=10.0)
    assert layout.num_rows == (13 + 8) + (8 + 8) + (1 + 3) + (13 + 8) + (5 + 8) < VOCAB
    assert state["params"][0]["embedding"]["embedding_table"].shape == (2, layout.num_rows, 4)
    assert_mutual_step_matches_reference(peers, optimizer, state, qr_batch(0), qr_batch(1),
                                         divergence="mse", execution="vmap",
                                         reference_batch=with_rows(layout, qr_batch(1)))


def test_qr_lazy_adam_updates_exactly_the_batch_quotient_and_remainder_rows():
    """First lazy-Adam step by hand: every parameter, and every QR row of the batch, moves
    by -lr * g / (|g| + eps) (bias-corrected first moments); every other row stays."""
    lr, eps = 1e-3, 1e-8
    layout, peers, optimizer, state = qr_setup("deepfm", lr=lr, grad_clip_norm=0.0, eps=eps,
                                               embedding_optimizer="lazy_adam")
    batch = qr_batch(2, size=6)  # touches some of the rows only
    model = peers.groups[0].model
    params = peer_groups.peer_variables(peers, state["params"], state["batch_stats"])["deepfm"]["params"]
    key = jax.random.fold_in(jax.random.fold_in(state["rng"], state["step"]), 0)
    rows = with_rows(layout, batch)["ids"]

    def loss(p):
        z = model.apply({"params": p}, rows, train=True, rngs={"dropout": key})
        return (jnp.mean(optax.sigmoid_binary_cross_entropy(z, batch["label"]))
                + regularization.l2_penalty(model, p))

    grads = jax.jit(jax.grad(loss))(params)
    touched = np.zeros(layout.num_rows, bool)
    touched[np.unique(np.asarray(rows))] = True
    assert 0 < touched.sum() < layout.num_rows

    def expected_leaf(path, p, g):
        moved = p - lr * g / (jnp.abs(g) + eps)
        if not sparse.is_table(path):
            return moved
        return jnp.where(touched[:, None], moved, p)

    expected = jax.tree_util.tree_map_with_path(expected_leaf, params, grads)
    step = mutual.make_train_step(peers, optimizer, donate=False)
    new_state, _, _ = step(state, batch, 1.0, None)
    got = peer_groups.peer_variables(peers, new_state["params"], new_state["batch_stats"])["deepfm"]
    assert_trees_close(got["params"], expected, atol=1e-6)
    table = np.asarray(new_state["params"][0]["embedding"]["embedding_table"][0])
    before = np.asarray(state["params"][0]["embedding"]["embedding_table"][0])
    np.testing.assert_array_equal(table[~touched], before[~touched])  # bitwise


def test_qr_predict_fn_maps_dataset_ids_on_padded_tables():
    layout, peers, _, state = qr_setup("deepfm,dcn", combiner="sum", table_row_multiple=7)
    assert peers.stored_rows == sharding.padded_table_rows(layout.num_rows, 7) > layout.num_rows
    assert state["params"][1]["embedding"]["embedding_table"].shape[1] == peers.stored_rows
    batch = qr_batch(3)
    logits = mutual.make_predict_fn(peers)(state["params"], state["batch_stats"], batch["ids"])
    per_peer = peer_groups.peer_variables(peers, state["params"], state["batch_stats"])
    rows = with_rows(layout, batch)["ids"]
    for k, group in enumerate(peers.groups):
        name = group.names[0]
        assert per_peer[name]["params"]["embedding"]["embedding_table"].shape[0] == layout.num_rows
        expected = group.model.apply({"params": per_peer[name]["params"]}, rows, train=False)
        np.testing.assert_allclose(np.asarray(logits[k]), np.asarray(expected), rtol=1e-6)


def test_qr_layout_from_config_and_a_layout_of_another_dataset():
    from mlctr.configs import tiny

    class Dataset:
        feature_map = {"fields": QR_FIELDS}

    config = tiny.get_config()
    assert peer_groups.qr_layout(config, Dataset()) is None
    config.vocab.qr_collisions, config.vocab.qr_combiner = 8, "sum"
    layout = peer_groups.qr_layout(config, Dataset())
    assert (layout.collisions, layout.combiner, layout.vocab_size) == (8, "sum", VOCAB)
    old_run = ml_collections.ConfigDict({"peers": "deepfm", "vocab": {"mode": "fit"}})
    assert peer_groups.qr_layout(old_run, Dataset()) is None  # config.json of an older run
    with pytest.raises(ValueError, match="covers 300 ids in 5 fields, not the dataset's 301"):
        peer_groups.build_peers("deepfm", MODELS, vocab_size=VOCAB + 1, num_fields=FIELDS,
                           qr_layout=layout)
