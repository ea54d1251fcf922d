"""Batch-norm statistics recomputed from the current weights before each evaluation, and
broken (saturated / exploded) predictions caught (issue 25, item 8)."""
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from mlctr import mutual
from mlctr import peer_groups
from mlctr.data.reader import PreparedDataset
from mlctr.run import batch_stats
from mlctr.run import checkpoint
from mlctr.run import evaluation
from mlctr.run import train

from tiny_runs import make_tiny_config


def test_precise_batch_stats_are_the_mean_of_each_batchs_statistics(tiny_data_dir):
    """numpy reference: the first batch-norm layer normalises dense_0's outputs; its
    statistics must be the mean over the batches of each batch's mean and variance."""
    config = make_tiny_config(tiny_data_dir, peers="fibinet*2")
    with config.unlocked():
        config.models.fibinet.batch_norm = True
    dataset = PreparedDataset(tiny_data_dir)
    peers, optimizer, _ = train.build_run(config, dataset)
    state = train.initial_state(config, peers, optimizer, dataset)
    batches = [dict(b) for b in list(dataset.train_batches(64, seed=0, epoch=0))[:3]]
    fn = mutual.make_batch_stats_fn(peers)
    precise = batch_stats.precise_batch_stats(fn, state["params"], state["batch_stats"],
                                              iter(batches), 3)
    model = peers.groups[0].model
    for k in range(2):
        params = jax.tree_util.tree_map(lambda x: x[k], state["params"][0])
        stats = jax.tree_util.tree_map(lambda x: x[k], state["batch_stats"][0])
        means, variances = [], []
        for b in batches:
            _, inter = model.apply({"params": params, "batch_stats": stats}, b["ids"],
                                   train=True, mutable=["batch_stats", "intermediates"],
                                   capture_intermediates=True)
            pre = np.asarray(inter["intermediates"]["dnn"]["dense_0"]["__call__"][0], np.float64)
            means.append(pre.mean(0))
            variances.append(pre.var(0))
        got = precise[0]["dnn"]["batch_norm_0"]
        np.testing.assert_allclose(np.asarray(got["mean"][k]), np.mean(means, 0),
                                   rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.asarray(got["var"][k]), np.mean(variances, 0),
                                   rtol=1e-4, atol=1e-9)


def test_prediction_health_against_numpy():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 0], np.float64)
    logits = np.stack([np.array([-1, 1, -1, -2, 0.5, -1, -3, 0.0]),
                       np.array([30, 30, 30, 30, 30, 30, -30, 30.0])])
    health = evaluation.prediction_health(["good", "saturated"], logits, labels)
    rate = 0.25
    constant = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    p = 1 / (1 + np.exp(-logits[0]))
    logloss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert health["good"]["saturated"] == 0.0
    assert abs(health["good"]["logloss_ratio"] - logloss / constant) < 1e-6
    assert health["saturated"]["saturated"] == 1.0
    assert evaluation.unhealthy(health["good"], 0.5, 2.0) is None
    why = evaluation.unhealthy(health["saturated"], 0.5, 2.0)
    assert "100.0% of its predictions saturated" in why and "constant predictor" in why
    assert evaluation.unhealthy(health["saturated"], 0.0, 0.0) is None  # checks off


def test_broken_evaluation_is_warned_never_best_and_marked(tiny_data_dir, tmp_path,
                                                           monkeypatch, caplog):
    """deepfm's predictions at the evaluations of steps 20 and 30 are made saturated (its
    logits x1000): one warning line each, neither is its best, results.md marks it."""
    calls = []
    predict_split = evaluation.predict_split

    def saturating(*args, **kwargs):
        logits, labels = predict_split(*args, **kwargs)
        calls.append(len(calls) + 1)
        if len(calls) in (2, 3):
            logits = logits.copy()
            logits[0] *= 1000.0
        return logits, labels

    monkeypatch.setattr(evaluation, "predict_split", saturating)
    config = make_tiny_config(tiny_data_dir, eval_steps=10, max_steps=40, patience=100)
    workdir = str(tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        results = train.train_and_evaluate(config, workdir)
    assert results["schedule"]["flagged_steps"] == [[20, 30], []]
    assert results["schedule"]["best_step"][0] in (10, 40)
    warnings = [r.getMessage() for r in caplog.records
                if "valid predictions are broken" in r.getMessage()]
    assert len(warnings) == 2 and all("\n" not in w and "deepfm" in w for w in warnings)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r["kind"] == "eval"]
    assert [sorted(r["broken"]) for r in evals] == [[], ["deepfm"], ["deepfm"], []]
    table = open(os.path.join(workdir, "results.md")).read()
    assert "| deepfm † |" in table and "| dcn |" in table
    assert "† deepfm: valid predictions broken at step(s) 20, 30 (not kept as best)" in table


def test_evaluation_uses_statistics_of_the_current_weights(tiny_data_dir, tmp_path):
    """A batch-norm run's best weights carry statistics recomputed for them: the exported
    valid metrics equal a prediction with freshly recomputed statistics."""
    config = make_tiny_config(tiny_data_dir, peers="dcn", eval_steps=25, max_steps=50)
    with config.unlocked():
        config.models.dcn.batch_norm = True
        config.train.precise_bn_batches = 4
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    dataset = PreparedDataset(tiny_data_dir)
    peers, _, _ = train.build_run(config, dataset)
    params, stats = peer_groups.stack_peer_variables(peers, checkpoint.load_peer_weights(workdir))
    params, stats = jax.tree_util.tree_map(jnp.asarray, (params, stats))
    placed = ({"ids": jnp.asarray(b["ids"])} for b in dataset.train_batches(64, seed=0, epoch=0))
    fresh = batch_stats.precise_batch_stats(mutual.make_batch_stats_fn(peers), params, stats,
                                            placed, 4)
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(fresh)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)
    assert results["broken"] == {"valid": {}, "test": {}}
