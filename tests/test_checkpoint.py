"""Checkpoints and resume (mlctr/run/checkpoint.py and the trainer's use of it).

A run that is killed (SIGKILL) or preempted (SIGTERM) and then rerun ends bitwise
identical to the run that went through: same final parameters, optimizer state, best
weights and metrics.jsonl. A corrupt or foreign checkpoint is a clear error and stays
on disk; a NaN stops the run before anything after it is saved.
"""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mlctr.run import checkpoint
from mlctr.run import resume
from mlctr.run import train
from mlctr.configs import default as default_config


def run_process(resumable, workdir, *extra_flags, interrupt=None):
    """Runs the trainer as its own process (`tests/interrupt_run.py` when interrupted)."""
    entry = ["-m", "tests.interrupt_run" if interrupt else "mlctr.main"]
    # The backend of this process (no JAX_PLATFORMS of its own): the resumed half of the run
    # happens here, and a CPU half with a GPU half would not be bitwise identical.
    env = dict(os.environ)
    if interrupt:
        env["MLCTR_TEST_INTERRUPT"] = interrupt
    return subprocess.run([sys.executable, *entry, *resumable.flags(workdir), *extra_flags],
                          cwd=resumable.REPO, env=env, capture_output=True, text=True, timeout=600)


def checkpoint_steps(workdir):
    directory = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def final_arrays(workdir):
    """Live state of the newest checkpoint and the exported best weights, as numpy."""
    step = checkpoint_steps(workdir)[-1]
    path = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(step), "state")
    state = jax.tree_util.tree_map(np.asarray, ocp.StandardCheckpointer().restore(path))
    return {"step": step, "state": state, "best": checkpoint.load_peer_weights(workdir)}


def metrics_records(workdir):
    """metrics.jsonl without its wall-clock fields."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items()
                 if k not in ("steps_per_sec", "examples_per_sec")} for line in f]


def assert_bitwise_equal(got, want):
    got_leaves = jax.tree_util.tree_leaves_with_path(got)
    want_leaves = jax.tree_util.tree_leaves(want)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    assert len(got_leaves) > 20
    for (path, g), w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and np.array_equal(g, w), jax.tree_util.keystr(path)


def output(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def test_killed_run_resumes_bitwise_identical(resumable, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    killed = run_process(resumable, workdir, interrupt="KILL:52")
    assert killed.returncode == -signal.SIGKILL, output(killed)
    # Step 52 is past the epoch boundary (50) and the checkpoint at 45; keep = 2.
    assert checkpoint_steps(workdir) == [30, 45]
    assert max(r["step"] for r in metrics_records(workdir)) == 50  # logged after 45: dropped

    results = train.train_and_evaluate(resumable.config(), workdir)

    assert results["resumed_from"] == 45
    assert_bitwise_equal(final_arrays(workdir), final_arrays(reference_run))
    assert metrics_records(workdir) == metrics_records(reference_run)
    with open(os.path.join(reference_run, "results.json")) as f:
        reference = json.load(f)
    assert results["valid"] == reference["valid"] and results["test"] == reference["test"]


def test_sigterm_saves_a_checkpoint_exits_143_and_resumes_bitwise(resumable, reference_run,
                                                                   tmp_path):
    workdir = str(tmp_path / "run")
    stopped = run_process(resumable, workdir, interrupt="TERM:37")
    assert stopped.returncode == 143, output(stopped)
    assert "stopped on SIGTERM at step 37 after saving a checkpoint" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert checkpoint_steps(workdir) == [30, 37]  # 37 is no multiple of ckpt_steps = 15

    results = train.train_and_evaluate(resumable.config(), workdir)

    assert results["resumed_from"] == 37
    assert_bitwise_equal(final_arrays(workdir), final_arrays(reference_run))
    assert metrics_records(workdir) == metrics_records(reference_run)


def flip_bytes(directory, count=8):
    """Inverts `count` bytes in the middle of the largest file under `directory`."""
    files = [os.path.join(root, name) for root, _, names in os.walk(directory)
             for name in names if name != checkpoint.MANIFEST]
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(count)
        f.seek(-len(chunk), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in chunk))
    return path


def test_checksum_flipped_bytes_in_the_newest_state_resume_from_the_intact_one(
        resumable, reference_run, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    flipped = flip_bytes(os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "60", "state"))

    results = train.train_and_evaluate(resumable.config(), workdir)

    assert results["resumed_from"] == 45
    warnings = [r.getMessage() for r in caplog.records if "newest intact" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "resuming from the checkpoint at step 45" in warnings[0]
    assert os.path.relpath(flipped, os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "60")) in (
        warnings[0])
    assert "content differs from its sha256" in warnings[0]
    # The bad copy is kept aside; the run redoes steps 46..60 exactly.
    assert os.path.isdir(os.path.join(workdir, checkpoint.CORRUPT_DIR, "60", "state"))
    assert_bitwise_equal(final_arrays(workdir), final_arrays(reference_run))
    assert metrics_records(workdir) == metrics_records(reference_run)


def test_checksum_every_checkpoint_corrupt_is_one_clear_error(resumable, reference_run,
                                                               tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    for step in (45, 60):
        flip_bytes(os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(step), "state"))

    with pytest.raises(checkpoint.CheckpointError) as error:
        train.train_and_evaluate(resumable.config(), workdir)

    message = str(error.value)
    assert "\n" not in message and message.startswith("no intact checkpoint in ")
    assert "step 60: " in message and "step 45: " in message and "mv " in message
    assert checkpoint_steps(workdir) == [45, 60]  # nothing moved or deleted


def test_checksum_flipped_bytes_in_best_is_a_clear_error(reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    assert checkpoint.verify_manifest(os.path.join(workdir, checkpoint.BEST_DIR))
    flip_bytes(os.path.join(workdir, checkpoint.BEST_DIR))

    with pytest.raises(checkpoint.CheckpointError, match="content differs from its sha256"):
        checkpoint.load_peer_weights(workdir)


def test_torn_checkpoint_without_manifest_resumes_from_the_previous_one(resumable, reference_run,
                                                                       tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    bad = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "60")
    os.remove(os.path.join(bad, checkpoint.MANIFEST))  # as if killed before the manifest
    for root, _, files in os.walk(os.path.join(bad, "state")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"not a checkpoint")

    results = train.train_and_evaluate(resumable.config(), workdir)

    assert results["resumed_from"] == 45
    assert os.path.isdir(os.path.join(workdir, checkpoint.CORRUPT_DIR, "60"))
    assert_bitwise_equal(final_arrays(workdir), final_arrays(reference_run))


def _tiny_trees():
    return {"w": np.arange(10.0, dtype=np.float32)}, {"w": np.ones(3, np.float32)}


def _abstract(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def test_enospc_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    state, best = _tiny_trees()
    checkpoints = checkpoint.RunCheckpoints(str(tmp_path), keep=2)
    checkpoints.save(1, state, best, {"step": 1})
    checkpoints.wait()

    async def disk_full(self, item, directory):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoints.save(2, state, best, {"step": 2})
        checkpoints.close()
    monkeypatch.undo()
    message = str(error.value)
    assert "\n" not in message
    assert "checkpoint of step 2" in message and "no space left on device" in message
    assert "the checkpoint at step 1 is intact" in message

    again = checkpoint.RunCheckpoints(str(tmp_path), keep=2)
    assert again.all_steps() == [1]
    restored, _, progress = again.restore(_abstract(state), _abstract(best), config={},
                                          dataset=None)
    assert progress["step"] == 1 and np.array_equal(restored["w"], state["w"])
    again.close()


def test_enospc_checkpoint_of_best_keeps_the_previous_best(tmp_path, monkeypatch):
    _, best = _tiny_trees()
    checkpoint.save_peer_weights(str(tmp_path), {"deepfm": best})

    def disk_full(directory):
        raise OSError(errno.ENOSPC, "No space left on device", directory)

    monkeypatch.setattr(checkpoint, "write_manifest", disk_full)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.save_peer_weights(str(tmp_path), {"deepfm": {"w": best["w"] * 2}})
    monkeypatch.undo()
    assert "the disk is full" in str(error.value) and "is kept" in str(error.value)
    loaded = checkpoint.load_peer_weights(str(tmp_path))
    assert np.array_equal(loaded["deepfm"]["w"], best["w"])


def test_checkpoint_of_another_config_is_refused(resumable, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    config = resumable.config()
    with config.unlocked():
        config.optimizer.learning_rate = 0.01
        config.train.max_steps = 80  # may change: training longer is a resume

    with pytest.raises(checkpoint.CheckpointError) as error:
        train.train_and_evaluate(config, workdir)

    message = str(error.value)
    assert "optimizer.learning_rate: checkpoint 0.001, config 0.01" in message
    assert "max_steps" not in message
    assert "\n" not in message
    assert checkpoint_steps(workdir) == [45, 60]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["optimizer"]["learning_rate"] == 0.001  # not overwritten


def test_an_interrupted_save_is_never_taken_for_a_checkpoint(reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    # What a crash in the middle of saving step 75 leaves: orbax's temporary directory.
    partial = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "75.orbax-checkpoint-tmp")
    shutil.copytree(os.path.join(workdir, checkpoint.CHECKPOINT_DIR, "60", "progress"),
                    os.path.join(partial, "progress"))

    checkpoints = checkpoint.RunCheckpoints(workdir, keep=2)

    assert checkpoints.latest_step() == 60
    checkpoints.close()


def test_non_finite_loss_stops_with_a_clear_message_and_saves_nothing_after(resumable,
                                                                              tmp_path):
    workdir = str(tmp_path / "run")
    # Adam moves every weight by ~1e38 in step 1, so step 2's loss overflows.
    proc = run_process(resumable, workdir, "--config.optimizer.learning_rate=1e38",
                       "--config.checkpoint.ckpt_steps=1")

    assert proc.returncode == 1, output(proc)
    assert "Traceback" not in proc.stderr
    assert re.search(r"mlctr: error: peer 'deepfm' has a non-finite training loss \((nan|inf)\) "
                     r"at step 2", proc.stderr), output(proc)
    assert "peer 'dcn' has a non-finite training loss" in proc.stderr
    assert "the last checkpoint, step 1, is from before it and is kept" in proc.stderr
    assert checkpoint_steps(workdir) == [1]


def test_a_key_added_with_its_default_is_no_config_difference():
    """A run saved before a config key existed still matches a config holding that
    key's default; any other value, or a removed key, is a difference."""
    current = json.loads(json.dumps(default_config.get_config().to_dict()))
    saved = json.loads(json.dumps(current))
    del saved["vocab"]["hash_buckets"]
    assert resume.config_differences(saved, current) == []
    current["vocab"]["hash_buckets"] = 7
    assert resume.config_differences(saved, current) == [
        "vocab.hash_buckets: checkpoint '<absent>', config 7"]
    assert resume.config_differences(current, saved) == [
        "vocab.hash_buckets: checkpoint 7, config '<absent>'"]


def test_a_table_split_that_changes_the_padding_is_refused_on_resume():
    """mesh.table may change on resume while the padded table rows stay the same."""
    saved = json.loads(json.dumps(default_config.get_config().to_dict()))
    current = json.loads(json.dumps(saved))
    current["mesh"]["table"] = 2
    assert resume.config_differences(saved, current) == []
    assert resume.table_padding_difference(saved, current, 994) == []
    current["mesh"]["table"] = 4
    assert resume.table_padding_difference(saved, current, 994) == [
        "mesh.table: checkpoint 1, config 4 (embedding tables of 994 vs 996 padded rows)"]
    # The tables' own rows decide, not the vocabulary's: with quotient-remainder
    # embeddings 2106 ids sit in 697 rows (a multiple of neither 2 nor 4; 2106 is of 2).
    progress = {"config": saved, "dataset": {"vocab_size": 2106}}
    current["mesh"]["table"] = 2
    checks = types.SimpleNamespace(directory="ckpt")
    with pytest.raises(checkpoint.CheckpointError, match="697 vs 698 padded rows"):
        checkpoint.RunCheckpoints._check_matches(checks, 5, progress, current,
                                                 {"vocab_size": 2106}, table_rows=697)
    checkpoint.RunCheckpoints._check_matches(checks, 5, progress, current, {"vocab_size": 2106})
