"""A replica of a replica program (mlctr/run/replicas.py) equals the same run alone.

Three replicas (seed 0 control, seed 0 mutual, seed 1 mutual at another learning rate)
trained as one program, against each trained by `train.train_and_evaluate`: the same
steps, schedule (best steps, decays, stops), valid and test metrics, eval records and
best weights.

With the replicas unrolled (`execution='unroll'`) everything is bitwise equal. With
`jax.vmap` (the default) not quite: the replica step maps the single run's step over a
leading axis, and XLA's CPU batched matmuls may sum in another order than the single
run's (the losses of a DeepFM+DCN pair first differ by one ulp after about ten steps).
So the continuous quantities (logloss, weights) agree to TOLERANCE, and AUC, a rank
statistic, to AUC_TOLERANCE: logits equal to 1e-7 may swap two near-tied examples, which
moves AUC by 1 / (positives x negatives), about 4e-5 on these 400-row splits. Batch norm
is tested unrolled only: flax computes a batch's variance as E[x^2] - E[x]^2, whose
cancellation turns those one-ulp differences into ~1e-4 of valid logloss through the
running statistics within ten steps (measured), beyond any tolerance worth the name.
"""
import json
import os

import numpy as np
import pytest

from tiny_runs import make_tiny_config
from experiments import common
from experiments import paper
from experiments import replicas as replica_runs
from mlctr.run import checkpoint
from mlctr.run import replicas as replicas_lib
from mlctr.run import train

# (embedding optimizer, batch norm, early stopping, replica execution)
CASES = {
    "vmap_dense": ("dense", False, False, "vmap"),
    "vmap_lazy_adam_early_stop": ("lazy_adam", False, True, "vmap"),
    "unroll_lazy_adam_batchnorm_early_stop": ("lazy_adam", True, True, "unroll"),
    "unroll_dense_batchnorm": ("dense", True, False, "unroll"),
}
# (seed, alpha, learning rate) of each replica.
REPLICAS = [(0, 0.0, 1e-3), (0, 1.0, 1e-3), (1, 1.0, 3e-3)]
TOLERANCE = 1e-6
WEIGHT_TOLERANCE = 1e-5  # after up to 60 Adam steps of one-ulp differences
AUC_TOLERANCE = 1.5e-4  # up to three swaps of near-tied examples


def _config(data_dir, seed, alpha, lr, case):
    optimizer, batch_norm, early_stop, _ = CASES[case]
    train_overrides = dict(num_epochs=2, max_steps=60, eval_steps=10, patience=1 if early_stop
                           else 100, log_steps=10)
    config = make_tiny_config(data_dir, peers="deepfm,dcn", **train_overrides)
    with config.unlocked():
        config.seed = seed
        config.mutual.alpha = alpha
        config.optimizer.learning_rate = lr
        config.optimizer.embedding_optimizer = optimizer
        config.optimizer.lr_decay_factor = 0.5
        # The replica loop does not recompute batch-norm statistics before an evaluation yet
        # (issue 25's fix of the single-run loop; replicas are opt-in until it does).
        config.train.precise_bn_batches = 0
        for name in ("deepfm", "dcn"):
            config.models[name].batch_norm = batch_norm
            config.models[name].net_dropout = 0.1  # each replica's own dropout stream
    config.lock()
    return config


def _eval_records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "eval"]


def _close(a, b, where, exact):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}", exact)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]", exact)
    elif isinstance(a, float) and not exact:
        auc = where.endswith(".auc") or ".best_value" in where
        assert abs(a - b) <= (AUC_TOLERANCE if auc else TOLERANCE), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_replica_equals_the_run_alone(tiny_data_dir, tmp_path, case):
    items = [replicas_lib.Replica(_config(tiny_data_dir, *spec, case),
                                  str(tmp_path / "replicas" / f"r{k}"))
             for k, spec in enumerate(REPLICAS)]
    exact = CASES[case][3] == "unroll"  # the single run's operations: bitwise on CPU
    together = replicas_lib.train_replicas(items, execution=CASES[case][3])
    stopped_early = False
    for k, (item, got) in enumerate(zip(items, together)):
        alone_dir = str(tmp_path / "alone" / f"r{k}")
        alone = train.train_and_evaluate(item.config, alone_dir)
        assert got["steps"] == alone["steps"], k
        stopped_early |= got["steps"] < 60 or any(got["schedule"]["stopped"])
        _close(got["schedule"], alone["schedule"], f"replica {k} schedule", exact)
        for split in ("valid", "test"):
            _close(got[split], alone[split], f"replica {k} {split}", exact)
        _close([{key: r[key] for key in ("step", "valid", "learning_rate", "stopped")}
                for r in _eval_records(item.workdir)],
               [{key: r[key] for key in ("step", "valid", "learning_rate", "stopped")}
                for r in _eval_records(alone_dir)], f"replica {k} eval records", exact)
        got_w = checkpoint.load_peer_weights(item.workdir)
        alone_w = checkpoint.load_peer_weights(alone_dir)
        for a, b in zip(_leaves(got_w), _leaves(alone_w)):
            np.testing.assert_allclose(a, b, rtol=0, atol=0 if exact else WEIGHT_TOLERANCE)
    if CASES[case][2]:
        assert stopped_early, "the early-stopping case stopped no peer: it tests nothing"
    # The arms of seed 0 share the data order but not the results (alpha differs).
    assert together[0]["valid"] != together[1]["valid"]


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
    return [np.asarray(tree)]


def test_replicas_must_differ_only_in_replica_keys(tiny_data_dir, tmp_path):
    a = _config(tiny_data_dir, 0, 0.0, 1e-3, "vmap_dense")
    b = _config(tiny_data_dir, 1, 1.0, 1e-3, "vmap_dense")
    with b.unlocked():
        b.train.batch_size = 32
    with pytest.raises(ValueError, match="train.batch_size"):
        replicas_lib.train_replicas([replicas_lib.Replica(a, str(tmp_path / "a")),
                                     replicas_lib.Replica(b, str(tmp_path / "b"))])


TIMING = ("train_seconds", "examples_per_sec", "replicas")


def _study_runs(data_dir, root):
    """Two seeds' pretraining and their control and mutual finetunes (experiments/paper.py)."""
    base = make_tiny_config(data_dir, peers="deepfm,dcn", max_steps=6)
    with base.unlocked():
        base.finetune.max_steps = 4
    pretrain = [paper.pretrain_run(base, str(root / "pretrain"), s, base.peers) for s in (0, 1)]
    finetune = [(paper.run_config(base, seed=s, peers=base.peers, alpha=alpha, init_from=d),
                 str(root / f"seed{s}" / arm))
                for s, (d, _) in zip((0, 1), pretrain) for arm, alpha in (("c", 0.0), ("m", 1.0))]
    return [(c, d) for d, c in pretrain], finetune


@pytest.mark.xfail(strict=True, reason="the replica loop lacks the single-run loop's step-0 "
                   "evaluation of a finetune (issue 25), so its finetunes differ; replicas are "
                   "opt-in (experiments/replicas.py) until it has it")
def test_run_all_as_replicas_equals_runs_one_by_one(tiny_data_dir, tmp_path):
    got = {}
    for way, use in (("replicas", True), ("alone", False)):
        pretrain, finetune = _study_runs(tiny_data_dir, tmp_path / way)
        got[way] = [replica_runs.run_all(runs, use_replicas=use, execution="unroll")
                    for runs in (pretrain, finetune)]
    for a, b in zip(sum(got["replicas"], []), sum(got["alone"], [])):
        assert a["replicas"] in (2, 4) and "replicas" not in b
        # The replica loop does not check for broken predictions yet (replicas are opt-in
        # until it does: experiments/replicas.py), so only the run alone records them.
        skip = TIMING + ("broken",)
        assert {k: v for k, v in a.items() if k not in skip} == {
            k: v for k, v in b.items() if k not in skip}
    # Finished runs are reused, not trained again.
    pretrain, _ = _study_runs(tiny_data_dir, tmp_path / "replicas")
    assert replica_runs.run_all(pretrain) == got["replicas"][0]


def test_seed_ranges():
    assert common.parse_seeds("0..3,7,2") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="0-9"):
        common.parse_seeds("0-9")
