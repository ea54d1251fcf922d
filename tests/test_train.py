"""End-to-end tests of the trainer and the finetune study on a tiny generated dataset."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mlctr import checkpoint
from mlctr import mutual
from mlctr import study
from mlctr import train
from mlctr.data.reader import PreparedDataset


def test_four_paper_peers_mutual_step_decreases_loss(tiny_config, tiny_data_dir):
    config = tiny_config(peers="deepfm,dcn,ipnn,fibinet")
    dataset = PreparedDataset(tiny_data_dir)
    peers, optimizer, step, _ = train.build_run(config, dataset)
    assert peers.names == ("deepfm", "dcn", "ipnn", "fibinet")
    state = train.initial_state(config, peers, optimizer, dataset)
    batches = list(dataset.train_batches(64, seed=0, epoch=0))[:8]
    losses = []
    for _ in range(4):  # a few passes over the same 8 batches
        for batch in batches:
            state, m = step(state, batch)
            losses.append(np.asarray(m["loss"]))
    first, last = np.mean(losses[:8], axis=0), np.mean(losses[-8:], axis=0)
    assert np.all(np.isfinite(last))
    assert np.all(last < first), (first, last)


def test_finetune_study_end_to_end(tiny_config, tmp_path):
    config = tiny_config()
    with config.unlocked():
        config.mode = "finetune_study"
        config.mutual.alpha = 1.0
    workdir = str(tmp_path / "study")
    summary = study.run_finetune_study(config, workdir)

    # Pretrained best weights exist and both finetunes started from them.
    assert checkpoint.peer_weights_exist(os.path.join(workdir, "pretrain"))
    for phase in ("finetune_control", "finetune_mutual"):
        with open(os.path.join(workdir, phase, "config.json")) as f:
            assert json.load(f)["init_from"] == os.path.join(workdir, "pretrain")
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert [row["peer"] for row in saved["rows"]] == ["deepfm", "dcn", "ensemble"]
    for row in saved["rows"]:
        for key in ("pretrain_auc", "control_auc", "mutual_auc", "auc_gain_pct", "logloss_gain_pct"):
            assert np.isfinite(row[key])
        expected = 100 * (row["mutual_auc"] - row["control_auc"]) / row["control_auc"]
        assert abs(row["auc_gain_pct"] - expected) < 1e-9
    table = open(os.path.join(workdir, "results.md")).read()
    assert "| deepfm |" in table and "Bayes-optimal" in table
    # The mutual term was active in the mutual finetune only.
    def mutual_terms(phase):
        with open(os.path.join(workdir, phase, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        return [r["mutual"]["deepfm"] for r in records if r["kind"] == "train"]
    assert max(mutual_terms("finetune_mutual")) > 0
    assert summary["phases"]["finetune_control"]["test"] != summary["phases"]["finetune_mutual"]["test"]


def test_control_equals_mutual_with_alpha_zero(tiny_config, tmp_path):
    """The two finetunes share weights, data order and rngs: alpha is the only difference."""
    config = tiny_config()
    pretrain_dir = str(tmp_path / "pretrain")
    train.train_and_evaluate(config, pretrain_dir)
    with config.unlocked():
        config.mode = "finetune_study"
        config.init_from = pretrain_dir
        config.mutual.alpha = 0.0
    summary = study.run_finetune_study(config, str(tmp_path / "study"))
    assert "pretrain" not in summary["phases"]
    assert summary["phases"]["finetune_control"]["test"] == summary["phases"]["finetune_mutual"]["test"]
    assert all(row["auc_gain_pct"] == 0.0 for row in summary["rows"])


def test_restore_best_weights_reproduces_metrics(tiny_config, tmp_path):
    config = tiny_config(peers="deepfm*2")
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    dataset = PreparedDataset(config.data.data_dir)
    peers, _, _, predict_fn = train.build_run(config, dataset)
    params, stats = mutual.stack_peer_variables(peers, checkpoint.load_peer_weights(workdir))
    params, stats = jax.tree_util.tree_map(jnp.asarray, (params, stats))
    logits, labels = train.predict_split(predict_fn, params, stats, dataset, "test", 256)
    again = train.split_metrics(list(peers.names), logits, labels)
    for name in peers.names:
        assert again[name] == results["test"][name]
    assert results["test"]["deepfm_0"] != results["test"]["deepfm_1"]  # different init keys


def test_peer_schedule_decays_and_stops_each_peer_separately():
    schedule = train.PeerSchedule.start(2, 1e-3)
    schedule.update([0.70, 0.70], 1, patience=2, decay=0.1, min_lr=1e-6)
    schedule.update([0.71, 0.69], 2, patience=2, decay=0.1, min_lr=1e-6)
    assert schedule.learning_rate == [1e-3, 1e-4] and schedule.stopped == [False, False]
    _, stopped = schedule.update([0.72, 0.69], 3, patience=2, decay=0.1, min_lr=1e-6)
    assert stopped == [False, True] and schedule.best_step == [3, 1]
    assert list(schedule.live_learning_rates()) == [np.float32(1e-3), 0.0]
    for _ in range(5):
        schedule.update([0.0, 0.0], 4, patience=10, decay=0.1, min_lr=1e-6)
    assert schedule.learning_rate[0] == 1e-6  # floor
    restored = train.PeerSchedule.from_json(json.loads(json.dumps(schedule.to_json())))
    assert restored == schedule
