"""Quotient-remainder tables split by rows over the `table` mesh axis: the sharded step on
QR rows gives the one-device step's losses and weights (dense and lazy Adam), and the
padding row that makes the layout's rows divide by mesh.table stays zero.

The 4-device test runs in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4
(`test_qr_table_sharding_in_a_4_device_process`; here it skips).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr import mutual
from mlctr import peer_groups
from mlctr import sharding
from mlctr.models import qr

four_devices = pytest.mark.skipif(
    os.environ.get("MLCTR_TEST_FOUR_DEVICES") != "1",
    reason="runs in the 4-device subprocess of test_qr_table_sharding_in_a_4_device_process")

SIZES, BATCH = (100, 60, 3, 100, 39), 64
FIELDS = [{"vocab_size": s, "offset": int(o)} for s, o in zip(SIZES, np.cumsum((0,) + SIZES[:-1]))]
# m = 8: 21 + 16 + 4 + 21 + 13 = 75 rows, so table = 4 pads one row.
LAYOUT = qr.QRLayout.from_fields(FIELDS, 8)
TINY = dict(embedding_dim=4, dnn_hidden_units=(8,), net_dropout=0.1, batch_norm=False,
            embedding_regularizer=1e-3, net_regularizer=1e-4)
MODELS = {"deepfm": dict(model="deepfm", **TINY),
          "dcn": dict(model="dcn", num_cross_layers=2, **TINY)}


def test_qr_table_sharding_in_a_4_device_process(four_device_tests):
    four_device_tests(__file__, passed=2, timeout=600)


def make_batch(seed):
    rng = np.random.default_rng(seed)
    return {"ids": (LAYOUT.offsets + rng.integers(0, SIZES, (BATCH, len(SIZES)))).astype(np.int32),
            "label": rng.integers(0, 2, BATCH).astype(np.float32)}


def run_steps(mesh, embedding_optimizer, num_steps=3):
    """(exported per-peer weights, losses [steps, N], state) of QR peers on `mesh`."""
    peers = peer_groups.build_peers("deepfm*2,dcn", MODELS, vocab_size=LAYOUT.vocab_size,
                               num_fields=len(SIZES), qr_layout=LAYOUT,
                               table_row_multiple=sharding.table_row_multiple(mesh))
    # Adam eps 1e-4 as tests/test_table_sharding.py: rounding-level gradients stay small.
    optimizer = peer_groups.make_optimizer(grad_clip_norm=10.0, eps=1e-4,
                                      embedding_optimizer=embedding_optimizer)
    state = jax.jit(lambda key: peer_groups.init_state(
        peers, key, jnp.zeros((2, len(SIZES)), jnp.int32), optimizer, 1e-2))(
            jax.random.PRNGKey(0))
    shardings = sharding.state_shardings(mesh, state, [g.size for g in peers.groups])
    step = mutual.make_train_step(peers, optimizer,
                                  peer_execution=sharding.peer_execution(mesh, "auto"),
                                  mesh=mesh, state_shardings=shardings)
    rep = sharding.replicated(mesh)
    alpha = sharding.put(np.float32(1.0), rep)
    non_finite = sharding.put(mutual.finite_record(peers.size), rep)
    state, losses = sharding.put(state, shardings), []
    for i in range(num_steps):
        batch = sharding.global_batch(mesh, make_batch(i), BATCH)
        state, measurements, non_finite = step(state, batch, alpha, non_finite)
        losses.append(np.asarray(measurements["loss"]))
    exported = peer_groups.peer_variables(peers, *sharding.to_host((state["params"],
                                                               state["batch_stats"])))
    return exported, np.stack(losses), state


@four_devices
@pytest.mark.parametrize("embedding_optimizer", ["dense", "lazy_adam"])
def test_four_device_qr_table_split_step_equals_one_device(embedding_optimizer):
    want, want_losses, _ = run_steps(sharding.make_mesh(1, 1, jax.devices()[:1]),
                                     embedding_optimizer)
    got, losses, state = run_steps(sharding.make_mesh(1, 1, table=4), embedding_optimizer)
    np.testing.assert_allclose(losses, want_losses, rtol=0, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert got["dcn"]["params"]["embedding"]["embedding_table"].shape == (LAYOUT.num_rows, 4)
    table = state["params"][0]["embedding"]["embedding_table"]
    assert {s.data.shape[1] for s in table.addressable_shards} == {76 // 4}
    np.testing.assert_array_equal(np.asarray(table)[:, LAYOUT.num_rows:], 0)
