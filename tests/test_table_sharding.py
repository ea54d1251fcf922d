"""Embedding tables split by rows over the `table` mesh axis (mlctr/sharding.py, mutual.py).

The sharded step must give the unsharded step's losses and parameters, for dense Adam and
for the lazy row-wise path of mlctr/sparse.py, on table = 4 and on data = 2 x table = 2;
the padding rows that make the vocabulary divide by mesh.table stay zero and never reach
the exported weights; a checkpoint of the sharded state restores with its shardings.

The 4-device tests run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4
(`test_table_sharding_in_a_4_device_process`; here they skip). The 2-process x 2-device test
runs the trainer under `launch.sh multiprocess`.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.run import checkpoint
from mlctr import mutual
from mlctr import peer_groups
from mlctr import sharding
from mlctr.run import train

FOUR_DEVICES = os.environ.get("MLCTR_TEST_FOUR_DEVICES") == "1"
four_devices = pytest.mark.skipif(
    not FOUR_DEVICES, reason="runs in the 4-device subprocess of "
                             "test_table_sharding_in_a_4_device_process")

# 302 rows: not a multiple of 4, so table = 4 pads two rows (table = 2 pads none).
VOCAB, FIELDS, BATCH = 302, 5, 64
TINY = dict(embedding_dim=4, dnn_hidden_units=(8,), net_dropout=0.1, batch_norm=False,
            embedding_regularizer=1e-3, net_regularizer=1e-4)
MODELS = {"deepfm": dict(model="deepfm", **TINY),
          "dcn": dict(model="dcn", num_cross_layers=2, **TINY)}
PEERS = "deepfm*2,dcn"
EMBEDDING_OPTIMIZERS = ("dense", "lazy_adam")


def test_mesh_shape_with_a_table_axis():
    assert sharding.mesh_shape(-1, 1, 8, table=2) == (4, 1, 2)
    assert sharding.mesh_shape(2, -1, 8, table=2) == (2, 2, 2)
    assert sharding.mesh_shape(1, 1, 4, table=4) == (1, 1, 4)
    with pytest.raises(ValueError, match="mesh.data = 3 x mesh.table = 2 does not divide"):
        sharding.mesh_shape(3, -1, 8, table=2)
    with pytest.raises(ValueError, match="mesh.table must be a positive device count"):
        sharding.mesh_shape(-1, 1, 8, table=0)
    with pytest.raises(ValueError, match=r"mesh.data x mesh.peer x mesh.table = 2 x 1 x 2 = 4"):
        sharding.mesh_shape(2, 1, 8, table=2)


def test_padded_tables_are_zero_and_not_exported():
    peers = peer_groups.build_peers(PEERS, MODELS, vocab_size=VOCAB, num_fields=FIELDS,
                               table_row_multiple=4)
    assert (peers.vocab_size, peers.stored_rows) == (302, 304)
    plain = peer_groups.build_peers(PEERS, MODELS, vocab_size=VOCAB, num_fields=FIELDS)
    assert plain.table_rows == 0 and plain.stored_rows == 302
    optimizer = peer_groups.make_optimizer(embedding_optimizer="lazy_adam")
    sample = jnp.zeros((2, FIELDS), jnp.int32)
    state = peer_groups.init_state(peers, jax.random.PRNGKey(0), sample, optimizer, 1e-2)
    reference = peer_groups.init_state(plain, jax.random.PRNGKey(0), sample, optimizer, 1e-2)
    table = state["params"][0]["embedding"]["embedding_table"]
    slots = state["opt_state"][0]["rows"]["embedding"]["embedding_table"]["slots"]
    assert table.shape == (2, 304, 4) and slots.shape == (2, 304, 9)
    np.testing.assert_array_equal(table[:, 302:], 0)
    np.testing.assert_array_equal(table[:, :302],
                                  reference["params"][0]["embedding"]["embedding_table"])
    exported = peer_groups.peer_variables(peers, state["params"], state["batch_stats"])
    assert exported["deepfm_0"]["params"]["embedding"]["embedding_table"].shape == (302, 4)
    linear = exported["deepfm_1"]["params"]["linear"]["embedding"]["embedding_table"]
    assert linear.shape == (302, 1)
    params, _ = peer_groups.stack_peer_variables(peers, exported)
    for got, want in zip(jax.tree_util.tree_leaves(params),
                         jax.tree_util.tree_leaves(state["params"])):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="table_row_multiple must be >= 1"):
        peer_groups.build_peers(PEERS, MODELS, vocab_size=VOCAB, num_fields=FIELDS,
                           table_row_multiple=0)


def test_table_sharding_in_a_4_device_process(four_device_tests):
    four_device_tests(__file__, passed=7, timeout=900)


def make_batch(seed):
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, VOCAB, (BATCH, FIELDS)).astype(np.int32),
            "label": rng.integers(0, 2, BATCH).astype(np.float32)}


class TableRun:
    """Mutual steps of PEERS on a mesh, built and placed as the trainer does."""

    def __init__(self, mesh, embedding_optimizer):
        self.mesh = mesh
        self.peers = peer_groups.build_peers(PEERS, MODELS, vocab_size=VOCAB, num_fields=FIELDS,
                                        table_row_multiple=sharding.table_row_multiple(mesh))
        # Adam eps 1e-4: see tests/test_sharding.py (a gradient that is 0 up to rounding
        # must not become an lr-sized step when the sums run in another order).
        optimizer = peer_groups.make_optimizer(grad_clip_norm=10.0, eps=1e-4,
                                          embedding_optimizer=embedding_optimizer)
        self.state = jax.jit(lambda key: peer_groups.init_state(
            self.peers, key, jnp.zeros((2, FIELDS), jnp.int32), optimizer, 1e-2))(
                jax.random.PRNGKey(0))
        self.shardings = sharding.state_shardings(mesh, self.state,
                                                  [g.size for g in self.peers.groups])
        self.step = mutual.make_train_step(
            self.peers, optimizer, peer_execution=sharding.peer_execution(mesh, "auto"),
            mesh=mesh, state_shardings=self.shardings)
        rep = sharding.replicated(mesh)
        self.alpha = sharding.put(np.float32(1.0), rep)
        self.non_finite = sharding.put(mutual.finite_record(self.peers.size), rep)

    def __call__(self, num_steps=3):
        """(state, losses [steps, N]) after `num_steps` steps from the initial state."""
        state, non_finite, losses = sharding.put(self.state, self.shardings), self.non_finite, []
        for i in range(num_steps):
            batch = sharding.global_batch(self.mesh, make_batch(i), BATCH)
            state, measurements, non_finite = self.step(state, batch, self.alpha, non_finite)
            losses.append(np.asarray(measurements["loss"]))
        return state, np.stack(losses)

    def exported(self, state):
        """Per-peer weights on the host, padding dropped (what the trainer exports)."""
        return peer_groups.peer_variables(
            self.peers, *sharding.to_host((state["params"], state["batch_stats"])))


@pytest.fixture(scope="module")
def unsharded():
    """{embedding optimizer: (run, state, losses)} on one device."""
    out = {}
    for name in EMBEDDING_OPTIMIZERS:
        run = TableRun(sharding.make_mesh(1, 1, jax.devices()[:1]), name)
        out[name] = (run, *run())
    return out


def assert_same_numbers(sharded_run, sharded, reference_run, reference):
    """Losses and exported weights within 1e-6 (the L2 and gradient-norm sums over a split
    table add partial sums, so bitwise equality is not to be expected)."""
    (state, losses), (ref_state, ref_losses) = sharded, reference
    np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-6)
    got, want = sharded_run.exported(state), reference_run.exported(ref_state)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def table_shard_rows(tree) -> set[int]:
    """Rows (axis 1) of each device's shard of every table-like leaf of a group's tree."""
    return {shard.data.shape[1]
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
            if sharding.is_table_leaf(path) for shard in leaf.addressable_shards}


@four_devices
@pytest.mark.parametrize("embedding_optimizer", EMBEDDING_OPTIMIZERS)
def test_four_device_table_split_step_equals_unsharded(unsharded, embedding_optimizer):
    mesh = sharding.make_mesh(1, 1, table=4)
    # The network is data-parallel over the table devices too: each takes 16 examples.
    assert sharding.batch_sharding(mesh).shard_shape((BATCH,)) == (BATCH // 4,)
    assert sharding.process_batch_slice(mesh, BATCH) == (0, 1)
    run = TableRun(mesh, embedding_optimizer)
    state, losses = run()
    reference_run, *reference = unsharded[embedding_optimizer]
    assert_same_numbers(run, (state, losses), reference_run, reference)
    # Each device holds a quarter of every table and of its optimizer state (304 / 4).
    assert table_shard_rows(state["params"]) == {76}
    assert table_shard_rows(state["opt_state"]) == {76}
    tables = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state["params"])
              if sharding.is_table_leaf(path)]
    for table in tables:  # the two padding rows were never reached
        np.testing.assert_array_equal(np.asarray(table)[:, VOCAB:], 0)
    # The network's parameters are replicated.
    dense = state["params"][0]["dnn"]
    assert {s.data.shape for leaf in jax.tree_util.tree_leaves(dense)
            for s in leaf.addressable_shards} == {leaf.shape for leaf in
                                                  jax.tree_util.tree_leaves(dense)}


@four_devices
@pytest.mark.parametrize("embedding_optimizer", EMBEDDING_OPTIMIZERS)
def test_four_device_data_and_table_split_step_equals_unsharded(unsharded,
                                                               embedding_optimizer):
    mesh = sharding.make_mesh(2, 1, table=2)
    assert dict(mesh.shape) == {"data": 2, "peer": 1, "table": 2}
    with pytest.raises(ValueError, match="batch size 6 is not a multiple of mesh.data = 2 x "
                                         "mesh.table = 2"):
        sharding.process_batch_slice(mesh, 6)
    run = TableRun(mesh, embedding_optimizer)
    state, losses = run()
    reference_run, *reference = unsharded[embedding_optimizer]
    assert_same_numbers(run, (state, losses), reference_run, reference)
    assert table_shard_rows(state["params"]) == table_shard_rows(state["opt_state"]) == {151}


@four_devices
def test_four_device_peer_and_table_split_step_equals_unsharded(unsharded):
    mesh = sharding.make_mesh(1, 2, table=2)
    run = TableRun(mesh, "lazy_adam")
    state, losses = run()
    reference_run, *reference = unsharded["lazy_adam"]
    assert_same_numbers(run, (state, losses), reference_run, reference)
    # deepfm*2: one peer and half the rows per device.
    shapes = {s.data.shape for s in
              state["params"][0]["embedding"]["embedding_table"].addressable_shards}
    assert shapes == {(1, 151, 4)}


@four_devices
def test_four_device_unpadded_table_is_refused():
    mesh = sharding.make_mesh(1, 1, table=4)
    peers = peer_groups.build_peers(PEERS, MODELS, vocab_size=VOCAB, num_fields=FIELDS)
    optimizer = peer_groups.make_optimizer()
    shapes = jax.eval_shape(lambda: peer_groups.init_state(
        peers, jax.random.PRNGKey(0), jnp.zeros((2, FIELDS), jnp.int32), optimizer, 1e-2))
    with pytest.raises(ValueError, match=r"has 302 rows, not a multiple of mesh.table = 4"):
        sharding.state_shardings(mesh, shapes, [g.size for g in peers.groups])


@four_devices
def test_four_device_sharded_checkpoint_restores(tmp_path):
    mesh = sharding.make_mesh(1, 1, table=4)
    run = TableRun(mesh, "lazy_adam")
    state, _ = run(num_steps=2)
    best = {"params": state["params"], "batch_stats": state["batch_stats"]}
    best_shardings = {"params": run.shardings["params"],
                      "batch_stats": run.shardings["batch_stats"]}
    saved = checkpoint.RunCheckpoints(str(tmp_path), keep=2)
    saved.save(2, state, best, {"step": 2, "config": {}, "dataset": {}})
    saved.close()

    as_target = lambda tree, shardings: jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
    restored, restored_best, progress = checkpoint.RunCheckpoints(str(tmp_path), keep=2).restore(
        as_target(state, run.shardings), as_target(best, best_shardings), config={},
        dataset={})
    assert progress["step"] == 2
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
        assert got.sharding == want.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    table = restored_best["params"][0]["embedding"]["embedding_table"]
    assert {s.data.shape[1] for s in table.addressable_shards} == {76}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_two_devices_data_and_table_split(resumable, reference_run, tmp_path):
    """2 processes x 2 CPU devices, data = 2 (across the processes) x table = 2 (within
    each): the trainer's run equals the single-process one; its sharded checkpoint
    restores in this single process."""
    workdir = str(tmp_path / "run")
    env = {**os.environ, "MLCTR_NO_VENV": "1", "PYTHON": sys.executable,
           "MLCTR_PORT": str(free_port()), "MLCTR_CPU_DEVICES": "2"}
    proc = subprocess.run(["bash", "launch.sh", "multiprocess", "2", *resumable.flags(workdir),
                           "--config.mesh.data=2", "--config.mesh.table=2"],
                          cwd=resumable.REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    assert "mesh {'data': 2, 'peer': 1, 'table': 2} over 2 process(es)" in proc.stderr, \
        proc.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(reference_run, "results.json")) as f:
        reference = json.load(f)
    assert results["steps"] == reference["steps"] == 60
    for split in ("valid", "test"):
        for peer, metrics in reference[split].items():
            for name, value in metrics.items():
                np.testing.assert_allclose(results[split][peer][name], value, rtol=2e-4,
                                           err_msg=f"{split} {peer} {name}")
    two, one = checkpoint.load_peer_weights(workdir), checkpoint.load_peer_weights(reference_run)
    for name in ("deepfm", "dcn"):
        for got, want in zip(jax.tree_util.tree_leaves(two[name]),
                             jax.tree_util.tree_leaves(one[name])):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-5)
    # The final checkpoint, tables written as shards by two processes, restores here.
    again = train.train_and_evaluate(resumable.config(), workdir)
    assert again["resumed_from"] == 60
