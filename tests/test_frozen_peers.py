"""A stopped (learning rate 0) peer is frozen entirely: params, optimizer state and batch
norm statistics stay bit-identical over further steps, alone and in a mutual group.

Issue 25, item 7: with only its learning rate at 0, a batch-norm peer's running
statistics kept moving with every train step (FiBiNET's valid AUC drifted after its stop)
and Adam's moments kept changing.
"""
import json
import os

import jax
import numpy as np
import pytest

from mlctr.data.reader import PreparedDataset
from mlctr.run import train

from tiny_runs import make_tiny_config


def _batch_norm_config(data_dir, peers, **train_overrides):
    config = make_tiny_config(data_dir, peers=peers, **train_overrides)
    with config.unlocked():
        for key in ("fibinet", "dcn", "deepfm"):
            config.models[key].batch_norm = True
    return config


def _peer_slice(tree, group: int, slot: int):
    return jax.tree_util.tree_map(lambda x: np.asarray(x[slot]), jax.device_get(tree[group]))


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b) and leaves_a
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)


def _differ(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("peers", ["fibinet", "fibinet,dcn"])
def test_zero_learning_rate_freezes_params_batch_stats_and_optimizer_state(tiny_data_dir,
                                                                           peers):
    """FiBiNET (batch norm) at lr 0, alone or beside a training DCN (alpha 1)."""
    config = _batch_norm_config(tiny_data_dir, peers)
    dataset = PreparedDataset(tiny_data_dir)
    built, optimizer, _ = train.build_run(config, dataset)
    train_step = train.make_step(config, built, optimizer)
    alpha = config.mutual.alpha

    def step(state, batch):
        state, measurements, _ = train_step(state, batch, alpha, None)
        return state, measurements

    state = train.initial_state(config, built, optimizer, dataset)
    batches = list(dataset.train_batches(64, seed=0, epoch=0))[:6]
    for batch in batches[:2]:  # Adam moments and running statistics away from their init
        state, _ = step(state, batch)
    state["learning_rate"] = state["learning_rate"].at[0].set(0.0)  # fibinet stops
    assert jax.tree_util.tree_leaves(state["batch_stats"][0])
    frozen = {k: _peer_slice(state[k], 0, 0) for k in ("params", "batch_stats", "opt_state")}
    live = {k: _peer_slice(state[k], 1, 0) for k in ("params", "batch_stats", "opt_state")
            } if built.size > 1 else None
    for batch in batches[2:]:
        state, measurements = step(state, batch)
        assert np.all(np.isfinite(np.asarray(measurements["loss"])))
    for k, before in frozen.items():
        _assert_trees_equal(_peer_slice(state[k], 0, 0), before)
    if live is not None:  # the companion still learns, from the frozen peer's predictions
        for k, before in live.items():
            assert _differ(_peer_slice(state[k], 1, 0), before), k
        assert float(np.asarray(measurements["mutual"])[1]) > 0


def test_stopped_batch_norm_peer_keeps_its_best_valid_metrics(tiny_data_dir, tmp_path):
    """End to end: after a peer's early stop, every later evaluation of it equals its best.

    A large learning rate and patience 1 for FiBiNET (per peer), evaluated every 5 steps,
    make it stop within the run while DCN (patience 100) trains on beside it."""
    config = _batch_norm_config(tiny_data_dir, "fibinet,dcn", eval_steps=5, patience=1,
                                peer_schedule="dcn:patience=100")
    with config.unlocked():
        config.optimizer.learning_rate = 0.03
        config.mutual.alpha = 1.0
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r["kind"] == "eval"]
    checked = 0
    for k, name in enumerate(results["peers"]):
        best_step = results["schedule"]["best_step"][k]
        best = next(r["valid"][name] for r in evals if r["step"] == best_step)
        # The evaluation that stops a peer measured its last, non-improving weights; its
        # best weights are restored after it.
        after_stop = [r for r in evals if r["stopped"][name]][1:]
        for record in after_stop:
            assert record["valid"][name] == best, (name, record["step"])
        # The exported best weights are the same weights.
        assert results["valid"][name] == best
        checked += len(after_stop)
    assert checked >= 2, "no peer stopped while the run went on: the test checked nothing"
