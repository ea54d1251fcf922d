"""Tests of the sparse row-wise embedding updates (mlctr/sparse.py) and of the step's speed-ups
(one compile per batch shape, checked with the jitted step's cache size; the unrolled
Threefry lowering of mlctr/xla_cpu.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlctr import mutual
from mlctr import peer_groups
from mlctr import sparse
from mlctr import xla_cpu

VOCAB, FIELDS, BATCH = 200, 4, 32
B1, B2, EPS = 0.9, 0.999, 1e-8
# No dropout, so a peer's update does not depend on its position among the peers.
TINY = dict(embedding_dim=4, dnn_hidden_units=(8,), net_dropout=0.0, batch_norm=False,
            embedding_regularizer=1e-3, net_regularizer=0.0)
MODELS = {"deepfm": dict(model="deepfm", **TINY),
          "dcn": dict(model="dcn", num_cross_layers=1, **TINY),
          "deepfm_noreg": dict(model="deepfm", **{**TINY, "embedding_regularizer": 0.0})}


def make_batch(seed, vocab=VOCAB, high=None):
    """Ids drawn from [0, high) (default: the lower half of the vocabulary, so the upper
    half is never touched), with many duplicates."""
    rng = np.random.default_rng(seed)
    return {"ids": jnp.asarray(rng.integers(0, high or vocab // 2, (BATCH, FIELDS)), jnp.int32),
            "label": jnp.asarray(rng.integers(0, 2, BATCH), jnp.float32)}


def setup(spec, embedding_optimizer, vocab=VOCAB, lr=1e-2, eps=EPS):
    peers = peer_groups.build_peers(spec, MODELS, vocab_size=vocab, num_fields=FIELDS)
    optimizer = peer_groups.make_optimizer(10.0, B1, B2, eps, embedding_optimizer)
    state = peer_groups.init_state(peers, jax.random.PRNGKey(0), jnp.zeros((2, FIELDS), jnp.int32),
                              optimizer, lr)
    return peers, optimizer, state


def copy_state(state):
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), state)


def embedding_table(params):
    return params["embedding"]["embedding_table"]


# ---------------------------------------------------------------------------
# Building blocks.


def test_batch_rows_with_duplicates():
    ids = jnp.asarray([[5, 3, 5], [3, 9, 0]], jnp.int32)
    rows = sparse.batch_rows(ids, vocab_size=10)
    assert int(rows.num_unique) == 4
    np.testing.assert_array_equal(rows.rows, [0, 3, 5, 9, 14, 15])  # padding 10 + position
    np.testing.assert_array_equal(rows.rows[rows.inverse], ids)
    table = jnp.arange(20.0).reshape(10, 2)
    gathered = sparse.take_rows(table, rows.rows)
    np.testing.assert_array_equal(gathered[4:], 0.0)  # padding reads 0
    written = sparse.put_rows(table, rows.rows, -gathered)
    np.testing.assert_array_equal(written[jnp.asarray([0, 3, 5, 9])], -table[jnp.asarray([0, 3, 5, 9])])
    untouched = np.setdiff1d(np.arange(10), [0, 3, 5, 9])
    np.testing.assert_array_equal(written[untouched], table[untouched])  # padding dropped


@pytest.mark.parametrize("vocab_size,num_ids,high", [
    (10, 6, 10), (7, 40, 7), (1000, 40, 1000), (1000, 40, 12), (100_000, 300, 100_000),
    (100_000, 300, 64), (2**20 + 3, 500, 2**20 + 3), (50, 2, 50)])
@pytest.mark.parametrize("method", ["sort", "bitmap"])
def test_batch_rows_inverse_over_vocab_to_batch_ratios(vocab_size, num_ids, high, method):
    """Both ways find every id at every vocabulary / batch ratio (the sort's bucketed search
    with bucket widths 2^0 to 2^11), with clustered ids (many in one bucket) and the largest
    id; the padding after the distinct ids is vocab_size + position."""
    rng = np.random.default_rng(vocab_size + num_ids)
    ids = rng.integers(max(0, high - 64) if high < vocab_size else 0, high, num_ids)
    ids[0] = vocab_size - 1
    rows = jax.jit(sparse.batch_rows, static_argnums=(1, 2))(
        jnp.asarray(ids, jnp.int32), vocab_size, method)
    distinct = np.unique(ids)
    size = min(num_ids, vocab_size)
    assert int(rows.num_unique) == distinct.size
    np.testing.assert_array_equal(rows.rows[:distinct.size], distinct)
    np.testing.assert_array_equal(rows.rows[distinct.size:],
                                  vocab_size + np.arange(distinct.size, size))
    np.testing.assert_array_equal(rows.rows[rows.inverse], ids)


def test_batch_rows_auto_picks_by_vocabulary_to_batch_ratio():
    """'auto' equals the way it picks: bitmap up to BITMAP_MAX_RATIO x the ids, then sort."""
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 100, (4, 5)), jnp.int32)
    for vocab_size, expected in [(100, "bitmap"), (20 * sparse.BITMAP_MAX_RATIO, "bitmap"),
                                 (20 * sparse.BITMAP_MAX_RATIO + 1, "sort")]:
        auto = jax.make_jaxpr(sparse.batch_rows, static_argnums=(1,))(ids, vocab_size)
        chosen = jax.make_jaxpr(sparse.batch_rows, static_argnums=(1, 2))(ids, vocab_size, expected)
        assert str(auto) == str(chosen), vocab_size
    with pytest.raises(ValueError, match="method"):
        sparse.batch_rows(ids, 100, "hash")


def numpy_row_update(kind, table, state, grads, lr):
    """Reference row optimizers on the rows `grads` (dict row -> gradient) touches."""
    table, state = table.copy(), {k: v.copy() for k, v in state.items()}
    for r, g in grads.items():
        if kind == "lazy_adam":
            state["count"][r] += 1
            c = state["count"][r]
            state["mu"][r] = B1 * state["mu"][r] + (1 - B1) * g
            state["nu"][r] = B2 * state["nu"][r] + (1 - B2) * g * g
            m_hat = state["mu"][r] / (1 - B1 ** c)
            v_hat = state["nu"][r] / (1 - B2 ** c)
            table[r] -= lr * m_hat / (np.sqrt(v_hat) + EPS)
        elif kind == "adagrad":
            state["accumulator"][r] += np.mean(g * g)
            table[r] -= lr * g / (np.sqrt(state["accumulator"][r]) + EPS)
        else:
            table[r] -= lr * g
    return table, state


@pytest.mark.parametrize("kind", ["lazy_adam", "adagrad", "sgd"])
def test_row_optimizer_matches_numpy_reference(kind):
    """Three updates on overlapping row sets (with duplicate ids) vs a numpy reference."""
    vocab, dim, lr = 12, 3, 0.05
    optimizer = sparse.SparseOptimizer(kind, grad_clip_norm=0.0, b1=B1, b2=B2, eps=EPS)
    rng = np.random.default_rng(0)
    params = {"embedding": {"embedding_table": jnp.asarray(rng.normal(size=(vocab, dim)),
                                                           jnp.float32)},
              "dense": {"kernel": jnp.ones((2,), jnp.float32)}}
    state = optimizer.init(params)
    ref_table = np.asarray(params["embedding"]["embedding_table"], np.float64)
    ref_state = {k: np.array(v, np.float64) for k, v in sparse.row_state_fields(
        kind, state["rows"]["embedding"]["embedding_table"]).items()}

    @jax.jit
    def update(params, state, ids, row_grads):
        rows = sparse.batch_rows(ids, vocab)
        view = sparse.take_table_rows(params, rows.rows)
        view_state = optimizer.take_state_rows(state, rows.rows)
        # Gradient of slot j = the j-th distinct id; padding slots get 0, as in the step.
        valid = (jnp.arange(rows.size) < rows.num_unique)[:, None]
        grads = {"embedding": {"embedding_table": jnp.where(valid, row_grads, 0.0)},
                 "dense": {"kernel": jnp.ones((2,))}}
        directions, view_state = optimizer.update(grads, view_state, view)
        view = jax.tree_util.tree_map(lambda w, d: w - lr * d, view, directions)
        return (sparse.put_table_rows(params, view, rows.rows),
                optimizer.put_state_rows(state, view_state, rows.rows))

    for step, ids in enumerate([[1, 4, 4, 7], [4, 1, 1, 9], [11, 4, 0, 0]]):
        uniq = sorted(set(ids))
        row_grads = rng.normal(size=(len(ids), dim)).astype(np.float32)
        row_grads[len(uniq):] = 0.0  # gradient slots exist for K = len(ids) rows
        params, state = update(params, state, jnp.asarray(ids, jnp.int32), jnp.asarray(row_grads))
        ref_table, ref_state = numpy_row_update(
            kind, ref_table, ref_state, {r: row_grads[i].astype(np.float64)
                                         for i, r in enumerate(uniq)}, lr)
        np.testing.assert_allclose(params["embedding"]["embedding_table"], ref_table,
                                   rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
        fields = sparse.row_state_fields(kind, state["rows"]["embedding"]["embedding_table"])
        for key, value in ref_state.items():
            np.testing.assert_allclose(fields[key], value,
                                       rtol=1e-5, atol=1e-9, err_msg=f"{key} step {step}")
    # Row 2 was never in a batch: untouched, its state zero.
    np.testing.assert_array_equal(params["embedding"]["embedding_table"][2], ref_table[2])


# ---------------------------------------------------------------------------
# The sparse step.


def test_untouched_rows_bitwise_unchanged():
    peers, optimizer, state = setup("deepfm*2,dcn", "lazy_adam")
    before = jax.device_get(state)
    step = mutual.make_train_step(peers, optimizer)  # donated, as in training
    for i in range(2):
        state, m, _ = step(state, make_batch(i), 1.0, None)
    assert step._cache_size() == 1  # one compile for every batch of this shape
    after = jax.device_get(state)
    upper = slice(VOCAB // 2, None)  # never in a batch
    for group in range(2):
        for path, leaf in jax.tree_util.tree_leaves_with_path(before["params"][group]):
            if sparse.is_table(path):
                new = after["params"][group]
                for key in path:
                    new = new[key.key]
                np.testing.assert_array_equal(new[:, upper], leaf[:, upper])
                assert not np.array_equal(new[:, :VOCAB // 2], leaf[:, :VOCAB // 2])
        rows_before = before["opt_state"][group]["rows"]
        rows_after = after["opt_state"][group]["rows"]
        tables = [rows_before["embedding"]["embedding_table"],
                  rows_after["embedding"]["embedding_table"]]
        if "linear" in rows_before:  # DeepFM's first-order weights: a [V, 1] table
            tables += [rows_before["linear"]["embedding"]["embedding_table"],
                       rows_after["linear"]["embedding"]["embedding_table"]]
        for old, new in zip(tables[::2], tables[1::2]):
            old, new = (sparse.row_state_fields("lazy_adam", t) for t in (old, new))
            for name in ("mu", "nu", "count"):
                np.testing.assert_array_equal(new[name][:, upper], old[name][:, upper])
            counts = new["count"][:, :VOCAB // 2]
            assert counts.max() == 2 and counts.min() == 0  # not every low id was drawn
    assert np.all(np.isfinite(np.asarray(m["loss"])))


@pytest.mark.parametrize("execution", ["vmap", "unroll"])
def test_stacked_peers_equal_per_peer(execution):
    """Two stacked DeepFM peers (independent: alpha 0) equal each peer trained alone."""
    peers, optimizer, state = setup("deepfm*2", "lazy_adam")
    pair = mutual.make_train_step(peers, optimizer, peer_execution=execution,
                                  donate=False)
    s2 = copy_state(state)
    for i in range(2):
        s2, _, _ = pair(s2, make_batch(i), 0.0, None)
    solo_peers, _, solo = setup("deepfm", "lazy_adam")
    single = mutual.make_train_step(solo_peers, optimizer, donate=False)
    for k in range(2):
        s1 = copy_state(solo)
        s1["params"] = jax.tree_util.tree_map(lambda x: x[k:k + 1], state["params"])
        s1["opt_state"] = jax.tree_util.tree_map(lambda x: x[k:k + 1], state["opt_state"])
        s1["rng"] = state["rng"]
        for i in range(2):
            s1, _, _ = single(s1, make_batch(i), 0.0, None)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a[k], b[0], rtol=2e-5, atol=2e-7),
            s2["params"], s1["params"])


def test_sparse_sgd_equals_dense_sgd():
    """Tables by SGD, the rest by Adam: the sparse step equals the dense step of the same
    optimizer (without embedding L2, where the two are defined to differ)."""
    peers, sparse_opt, state = setup("deepfm_noreg,dcn", "sgd")
    dense_opt = optax.chain(optax.clip_by_global_norm(10.0), optax.masked(
        optax.scale_by_adam(B1, B2, EPS),
        lambda p: jax.tree_util.tree_map(lambda t: not t, sparse.table_mask(p))))
    dense_state = copy_state(state)
    dense_state["opt_state"] = tuple(jax.vmap(dense_opt.init)(p) for p in state["params"])
    sparse_step = mutual.make_train_step(peers, sparse_opt, donate=False)
    dense_step = mutual.make_train_step(peers, dense_opt, donate=False)
    for i in range(2):
        state, ms, _ = sparse_step(state, make_batch(i), 1.0, None)
        dense_state, md, _ = dense_step(dense_state, make_batch(i), 1.0, None)
    assert sparse_step._cache_size() == dense_step._cache_size() == 1
    np.testing.assert_allclose(ms["grad_norm"], md["grad_norm"], rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           state["params"], dense_state["params"])


def test_lazy_adam_equals_dense_adam_when_every_row_is_seen():
    vocab = 16
    ids = np.tile(np.arange(vocab).reshape(-1, FIELDS), (BATCH * FIELDS // vocab, 1))
    batches = [{"ids": jnp.asarray(np.random.default_rng(i).permutation(ids), jnp.int32),
                "label": jnp.asarray(np.arange(BATCH) % 2, jnp.float32)} for i in range(2)]
    # Adam's first steps move each weight by ~lr * g / (|g| + eps): with eps = 1e-8 a weight
    # whose gradient is ~1e-8 moves by an amount that float32 reassociation in the two
    # (differently fused) programs changes by ~1e-5; eps = 1e-4 keeps the comparison
    # about the optimizers, not about rounding.
    eps = 1e-4
    peers, lazy, state = setup("dcn", "lazy_adam", vocab=vocab, eps=eps)
    dense = peer_groups.make_optimizer(10.0, B1, B2, eps)
    dense_state = copy_state(state)
    dense_state["opt_state"] = tuple(jax.vmap(dense.init)(p) for p in state["params"])
    lazy_step = mutual.make_train_step(peers, lazy, donate=False)
    dense_step = mutual.make_train_step(peers, dense, donate=False)
    for batch in batches:
        state, _, _ = lazy_step(state, batch, 1.0, None)
        dense_state, _, _ = dense_step(dense_state, batch, 1.0, None)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           state["params"], dense_state["params"])


def test_unrolled_threefry_is_bitwise_threefry():
    """Random123's known-answer vector for Threefry-2x32 (20 rounds)."""
    assert xla_cpu.use_unrolled_threefry()
    key = jnp.asarray([0x13198A2E, 0x03707344], jnp.uint32)
    count = jnp.asarray([0x243F6A88, 0x85A308D3], jnp.uint32)
    out = jax.jit(jax.extend.random.threefry_2x32)(key, count)
    assert [int(x) for x in out] == [0xC4923A9C, 0x483DF7A0]


def test_config_selects_the_sparse_optimizer():
    from mlctr.configs import tiny

    config = tiny.get_config()
    assert config.optimizer.embedding_optimizer == "dense"
    with pytest.raises(ValueError, match="embedding_optimizer"):
        peer_groups.make_optimizer(embedding_optimizer="adam_sparse")
    optimizer = peer_groups.make_optimizer(config.optimizer.grad_clip_norm, config.optimizer.b1,
                                      config.optimizer.b2, config.optimizer.eps, "adagrad")
    assert isinstance(optimizer, sparse.SparseOptimizer)
    assert optimizer.embedding_optimizer == "adagrad"
