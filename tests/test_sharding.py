"""Device mesh and shardings (mlctr/sharding.py) with the trainer's sharded step.

The step tests need 4 devices. `test_mesh_steps_in_a_4_device_process` reruns this file
in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (the flag must
be set before JAX starts); there the `test_four_device_*` tests run, here they skip.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr import mutual
from mlctr import peer_groups
from mlctr import sharding

FOUR_DEVICES = os.environ.get("MLCTR_TEST_FOUR_DEVICES") == "1"
four_devices = pytest.mark.skipif(
    not FOUR_DEVICES, reason="runs in the 4-device subprocess of test_mesh_steps_in_a_4_device_process")

VOCAB, FIELDS, BATCH = 300, 5, 64
TINY = dict(embedding_dim=4, dnn_hidden_units=(8,), net_dropout=0.1, batch_norm=False,
            embedding_regularizer=1e-3, net_regularizer=1e-4)
MODELS = {"deepfm": dict(model="deepfm", **TINY),
          "dcn": dict(model="dcn", num_cross_layers=2, **TINY)}
PEERS = "deepfm*4,dcn*2"  # a group of 4 and a group of 2


def test_mesh_shape_resolves_minus_one_and_rejects_bad_sizes():
    assert sharding.mesh_shape(-1, 1, 8) == (8, 1, 1)
    assert sharding.mesh_shape(-1, 2, 8) == (4, 2, 1)
    assert sharding.mesh_shape(2, -1, 8) == (2, 4, 1)
    assert sharding.mesh_shape(2, 4, 8) == (2, 4, 1)
    with pytest.raises(ValueError, match="mesh.peer = 3 does not divide the 8 devices"):
        sharding.mesh_shape(-1, 3, 8)
    with pytest.raises(ValueError, match="2 x 2 = 4, but there are 8 devices"):
        sharding.mesh_shape(2, 2, 8)
    with pytest.raises(ValueError, match="at most one"):
        sharding.mesh_shape(-1, -1, 8)


def test_mesh_steps_in_a_4_device_process(four_device_tests):
    four_device_tests(__file__, passed=3, timeout=600)


def make_batch(seed):
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, VOCAB, (BATCH, FIELDS)).astype(np.int32),
            "label": rng.integers(0, 2, BATCH).astype(np.float32)}


class MeshRun:
    """Mutual steps of PEERS on a mesh, placed as the trainer places them."""

    def __init__(self, mesh):
        self.mesh = mesh
        peers = peer_groups.build_peers(PEERS, MODELS, vocab_size=VOCAB, num_fields=FIELDS)
        # Adam eps 1e-4 (not 1e-8): the mesh sums gradients in another order, and a
        # gradient that is 0 up to rounding can change sign; with eps 1e-8 Adam turns that
        # noise into a full lr-sized step of the element (seen: 1 of 1200 table entries
        # off by 1.8e-4). Both runs use the same optimizer: the test compares placements.
        optimizer = peer_groups.make_optimizer(grad_clip_norm=10.0, eps=1e-4)
        self.state = jax.jit(lambda key: peer_groups.init_state(
            peers, key, jnp.zeros((2, FIELDS), jnp.int32), optimizer, 1e-2))(jax.random.PRNGKey(0))
        # vmap on every mesh: one trace per group, whatever its size (the 2-process test
        # covers the unrolled loop that CPU data parallelism uses by default).
        self.shardings = sharding.state_shardings(mesh, self.state, [g.size for g in peers.groups])
        self.step = mutual.make_train_step(peers, optimizer, peer_execution="vmap", mesh=mesh,
                                           state_shardings=self.shardings)
        rep = sharding.replicated(mesh)
        self.alpha = sharding.put(np.float32(1.0), rep)
        self.non_finite = sharding.put(mutual.finite_record(peers.size), rep)

    def __call__(self, num_steps=3):
        """(state, losses [steps, N]) after `num_steps` steps from the initial state."""
        state, non_finite, losses = sharding.put(self.state, self.shardings), self.non_finite, []
        for i in range(num_steps):
            batch = sharding.global_batch(self.mesh, make_batch(i), BATCH)
            state, measurements, non_finite = self.step(state, batch, self.alpha, non_finite)
            losses.append(np.asarray(measurements["loss"]))
        return state, np.stack(losses)


@pytest.fixture(scope="module")
def single_device():
    return MeshRun(sharding.make_mesh(1, 1, jax.devices()[:1]))()


def assert_close_to(single, sharded):
    (ref_state, ref_losses), (state, losses) = single, sharded
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree_util.tree_leaves(jax.device_get(state)),
                         jax.tree_util.tree_leaves(jax.device_get(ref_state))):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def shard_rows(state, group):
    """Leading-axis length of each device's shard of a group's parameters."""
    return {leaf.addressable_shards[0].data.shape[0]
            for leaf in jax.tree_util.tree_leaves(state["params"][group])}


@four_devices
def test_four_device_data_parallel_step_equals_single_device(single_device):
    mesh = sharding.make_mesh(-1, 1)
    assert dict(mesh.shape) == {"data": 4, "peer": 1, "table": 1}
    assert sharding.process_batch_slice(mesh, BATCH) == (0, 1)  # one process reads all
    run = MeshRun(mesh)
    state, losses = run()
    assert_close_to(single_device, (state, losses))
    assert shard_rows(state, 0) == {4} and shard_rows(state, 1) == {2}  # all peers everywhere
    # Bitwise reproducible on the same mesh.
    again_state, again_losses = run()
    np.testing.assert_array_equal(again_losses, losses)
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(again_state)),
                    jax.tree_util.tree_leaves(jax.device_get(state))):
        np.testing.assert_array_equal(a, b)


@four_devices
def test_four_device_data_and_peer_parallel_step_equals_single_device(single_device):
    mesh = sharding.make_mesh(2, 2)
    state, losses = MeshRun(mesh)()
    assert_close_to(single_device, (state, losses))
    assert shard_rows(state, 0) == {2} and shard_rows(state, 1) == {1}  # each group split in 2


@four_devices
def test_four_device_peer_parallel_step_equals_single_device(single_device):
    mesh = sharding.make_mesh(1, -1)
    state, losses = MeshRun(mesh)()
    assert_close_to(single_device, (state, losses))
    # deepfm*4 is split one peer per device; dcn*2 does not divide by 4: replicated.
    assert shard_rows(state, 0) == {1} and shard_rows(state, 1) == {2}
    opt_leaves = jax.tree_util.tree_leaves(state["opt_state"][0])
    assert {leaf.addressable_shards[0].data.shape[0] for leaf in opt_leaves} == {1}
