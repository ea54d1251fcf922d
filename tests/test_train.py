"""End-to-end tests of the trainer and the finetune study on a tiny generated dataset."""
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.run import checkpoint
from mlctr import locking
from mlctr import mutual
from mlctr import peer_groups
from mlctr.run import logs
from mlctr import study
from mlctr.run import errors, evaluation, inputs
from mlctr.run import train
from mlctr.data.reader import PreparedDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_four_paper_peers_mutual_step_decreases_loss(tiny_config, tiny_data_dir):
    config = tiny_config(peers="deepfm,dcn,ipnn,fibinet")
    dataset = PreparedDataset(tiny_data_dir)
    peers, optimizer, _ = train.build_run(config, dataset)
    step = train.make_step(config, peers, optimizer)
    assert peers.names == ("deepfm", "dcn", "ipnn", "fibinet")
    state = train.initial_state(config, peers, optimizer, dataset)
    batches = list(dataset.train_batches(64, seed=0, epoch=0))[:8]
    losses = []
    for _ in range(4):  # a few passes over the same 8 batches
        for batch in batches:
            state, m, _ = step(state, batch, config.mutual.alpha, None)
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
    peers, _, predict_fn = train.build_run(config, dataset)
    params, stats = peer_groups.stack_peer_variables(peers, checkpoint.load_peer_weights(workdir))
    params, stats = jax.tree_util.tree_map(jnp.asarray, (params, stats))
    logits, labels = evaluation.predict_split(predict_fn, params, stats, dataset, "test", 256)
    again = evaluation.split_metrics(list(peers.names), logits, labels)
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


# ---------------------------------------------------------------------------
# Faults at the trainer's start and on resume: one clear line, nothing lost.


def test_lock_second_run_in_one_workdir_is_refused_before_writing(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    with locking.exclusive_lock(workdir, "run"):
        with pytest.raises(locking.LockedError, match=r"is in use by pid \d+ on host"):
            train.train_and_evaluate(tiny_config(), workdir)
    assert sorted(os.listdir(workdir)) == [".lock"]  # nothing of a run was written


@pytest.mark.parametrize("key, value", [("train.batch_size", 0), ("mutual.alpha", -1.0),
                                        ("train.num_epochs", 0)])
def test_validate_config_at_trainer_start(tiny_config, tmp_path, key, value):
    config = tiny_config()
    section, field = key.split(".")
    with config.unlocked():
        config[section][field] = value
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"^config\.{key}: "):
        train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def _main(workdir, *flags, data_dir=None):
    """`python -m mlctr.main` on the tiny config; returns the completed process."""
    cmd = [sys.executable, "-m", "mlctr.main", "--config=mlctr/configs/tiny.py",
           "--config.mode=train", f"--workdir={workdir}", "--compilation_cache=",
           *([f"--config.data.data_dir={data_dir}"] if data_dir else []), *flags]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _assert_one_clear_line(proc, *fragments):
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = [l for l in proc.stderr.splitlines() if l.startswith("mlctr: error: ")]
    assert len(line) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in line[0], line[0]


def test_lock_main_prints_one_line_when_the_workdir_is_in_use(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    with locking.exclusive_lock(workdir, "run"):
        proc = _main(workdir, data_dir=tiny_data_dir)
    _assert_one_clear_line(proc, workdir, f"in use by pid {os.getpid()}")


@pytest.mark.parametrize("case", ["workdir_is_a_file", "missing_data_dir", "batch_size_0",
                                  "train_split_smaller_than_a_batch"])
def test_validate_main_start_faults_print_one_line(case, tiny_data_dir, tmp_path):
    workdir, data_dir, flags = tmp_path / "run", tiny_data_dir, []
    if case == "workdir_is_a_file":
        workdir.write_text("not a directory")
        expected = (str(workdir), "is a file")
    elif case == "missing_data_dir":
        data_dir = str(tmp_path / "nowhere")
        flags = ["--config.data.dataset=criteo"]
        expected = ("no prepared dataset at " + data_dir, "config.data.raw")
    elif case == "batch_size_0":
        flags = ["--config.train.batch_size=0"]
        expected = ("config.train.batch_size",)
    else:
        flags = ["--config.train.batch_size=4096", "--config.train.eval_batch_size=4096"]
        expected = ("smaller than one batch", "config.train.batch_size = 4096")
    proc = _main(workdir, *flags, data_dir=data_dir)
    _assert_one_clear_line(proc, *expected)
    if case == "workdir_is_a_file":
        assert workdir.read_text() == "not a directory"


def test_torn_metrics_last_line_is_dropped_with_one_warning(tmp_path, caplog):
    path = tmp_path / logs.METRICS_FILE
    records = [{"kind": "train", "step": s, "loss": {"deepfm": 0.5}} for s in (10, 20, 30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "train", "st')
    with caplog.at_level(logging.WARNING):
        logs.MetricsWriter(str(tmp_path), start_step=20).close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == records[:2]
    warnings = [r for r in caplog.records if "half-written last line" in r.getMessage()]
    assert len(warnings) == 1 and f"{path}:4" in warnings[0].getMessage()


def test_torn_metrics_line_before_the_last_is_a_clear_error(tmp_path):
    path = tmp_path / logs.METRICS_FILE
    original = '{"kind": "train", "step": 10}\n{"kind": "tr\n{"kind": "train", "step": 20}\n'
    path.write_text(original)
    with pytest.raises(errors.RunError, match=rf"^{path}:2: not a JSON record"):
        logs.MetricsWriter(str(tmp_path), start_step=20)
    assert path.read_text() == original  # nothing dropped


def test_torn_metrics_resume_finishes_and_records_the_dataset(resumable, reference_run,
                                                               tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"kind": "eval", "step": 60, "val')  # a kill during a write
    results = train.train_and_evaluate(resumable.config(), workdir)
    with open(os.path.join(reference_run, "results.json")) as f:
        assert results["test"] == json.load(f)["test"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert all(json.loads(line) for line in f)
    with open(os.path.join(workdir, "dataset.json")) as f:
        record = json.load(f)
    dataset = PreparedDataset(resumable.data_dir)
    assert record == {**inputs.dataset_fingerprint(dataset), "dataset": "synthetic"}


def test_log_lines_name_and_round_each_peer(caplog):
    assert logs.peer_values({"deepfm": 0.50888, "dcn": 0.53221}) == "deepfm 0.5089  dcn 0.5322"
    valid = {"deepfm": {"auc": 0.712344, "logloss": 0.5}, "dcn": {"auc": 0.7, "logloss": 0.6}}
    with caplog.at_level(logging.INFO, logger="absl"):  # whatever verbosity a test left
        logs.log_eval(20, valid, {"deepfm": True, "dcn": False}, {"dcn": True})
    assert "step 20  valid auc deepfm 0.71234*  dcn 0.70000 (stopped)" in caplog.text
    clock = logs.Throughput(batch_size=64)
    assert clock.eta(100) is None and clock.examples_per_sec == 0.0  # nothing timed yet
    clock.timed_steps, clock.timed_seconds = 10, 2.0
    assert clock.eta(100) == 20.0 and clock.examples_per_sec == 320.0
    assert logs.format_seconds(3725) == "1:02:05"


def test_hash_vocab_run_prepares_trains_and_refuses_a_fit_mode_config(tiny_config, tmp_path):
    """config.vocab reaches prepare: a hash-mode run trains on hashed ids (no vocab
    pass), and a fit-mode config pointed at that dataset is one clear error."""
    from mlctr.run import inputs
    from mlctr.run.errors import RunError
    config = tiny_config(max_steps=5, eval_steps=0)
    with config.unlocked():
        config.data.data_dir = str(tmp_path / "data")
        config.data.num_rows = 2000
        config.vocab.mode = "hash"
        config.vocab.hash_buckets = 64
    inputs.ensure_prepared(config, str(tmp_path / "run"))
    dataset = inputs.open_run_dataset(config, str(tmp_path / "run"))
    assert dataset.feature_map["vocab"]["mode"] == "hash"
    assert dataset.vocab_size == dataset.num_fields * 65  # 64 buckets + the missing id
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["steps"] == 5
    with config.unlocked():
        config.vocab.mode = "fit"
    with pytest.raises(RunError, match="prepared with vocab mode 'hash'.*config.vocab.mode"):
        inputs.open_run_dataset(config, str(tmp_path / "other"))


def test_prefetch_places_in_order_reraises_and_closes_its_iterator():
    closed = []

    def batches():
        try:
            yield from ({"x": i} for i in range(10))
        finally:
            closed.append(True)

    placed = inputs.prefetch(batches(), place=lambda batch: batch["x"] * 2, size=2)
    assert [next(placed) for _ in range(3)] == [0, 2, 4]
    placed.close()  # the consumer leaves early: the thread ends and closes the batches
    assert closed == [True]

    def failing():
        yield {"x": 1}
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(inputs.prefetch(failing(), place=lambda batch: batch))
