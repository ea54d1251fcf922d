"""TensorBoard event files (mlctr/run/tensorboard.py), read back with TensorBoard's own reader.

The reader is tensorboard's EventAccumulator, which TensorBoard uses to serve a run (no
TensorFlow needed): what it shows after a resume is what a user sees.
"""
import glob
import os
import shutil
import subprocess
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader

from mlctr.run import tensorboard


def read_scalars(logdir):
    """{tag: [(step, value), ...]} as TensorBoard shows them."""
    accumulator = event_accumulator.EventAccumulator(str(logdir))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def event_files(logdir):
    return sorted(glob.glob(os.path.join(str(logdir), "events.out.tfevents.*")))


def test_scalars_round_trip(tmp_path):
    writer = tensorboard.SummaryWriter(str(tmp_path), purge_step=1)
    writer.scalars(10, {"train/loss/deepfm": 0.5, "valid/auc/dcn": 0.75})
    writer.scalars(20, {"train/loss/deepfm": 0.25})
    writer.close()
    writer.close()  # closing twice is harmless
    assert read_scalars(tmp_path) == {"train/loss/deepfm": [(10, 0.5), (20, 0.25)],
                                      "valid/auc/dcn": [(10, 0.75)]}


def test_flush_makes_scalars_visible_before_close(tmp_path):
    writer = tensorboard.SummaryWriter(str(tmp_path))
    writer.scalars(3, {"train/loss/dcn": 0.125})
    writer.flush()
    assert read_scalars(tmp_path) == {"train/loss/dcn": [(3, 0.125)]}
    writer.close()


def _interrupted_then_resumed(logdir, checkpoint_step):
    """An interrupted process logs steps 10..60; the resumed one restarts after the checkpoint."""
    interrupted = tensorboard.SummaryWriter(str(logdir), purge_step=1)
    for step in range(10, 70, 10):
        interrupted.scalars(step, {"train/loss/deepfm": 1.0})
        if step % 20 == 0:
            interrupted.scalars(step, {"valid/auc/deepfm": 1.0})
    interrupted.flush()  # killed: no close
    resumed = tensorboard.SummaryWriter(str(logdir), purge_step=checkpoint_step + 1)
    # So far the resumed process has logged one training step and no evaluation.
    resumed.scalars(40, {"train/loss/deepfm": 2.0})
    resumed.close()
    interrupted.close()


def test_resume_purges_every_tag_logged_after_the_checkpoint(tmp_path):
    _interrupted_then_resumed(tmp_path, checkpoint_step=30)
    assert read_scalars(tmp_path) == {
            "train/loss/deepfm": [(10, 1.0), (20, 1.0), (30, 1.0), (40, 2.0)],
            # Logged at 40 and 60 by the interrupted process only: gone, not left dangling.
            "valid/auc/deepfm": [(20, 1.0)]}


def _file_events(path):
    """(step, is a scalar event) of each event in one file, without the file-version one."""
    return [(event.step, bool(event.summary.value))
            for event in event_file_loader.EventFileLoader(path).Load() if not event.file_version]


def test_resume_keeps_the_interrupted_file_and_starts_a_purging_one(tmp_path):
    _interrupted_then_resumed(tmp_path, checkpoint_step=30)
    # Both writers opened within the same second: each wrote its purge marker (an event
    # at its purge step that holds no scalar) and then its scalars' file, in name order;
    # the interrupted process's file is not overwritten.
    assert [_file_events(path) for path in event_files(tmp_path)] == [
            [(1, False)],
            [(step, True) for step in (10, 20, 20, 30, 40, 40, 50, 60, 60)],
            [(31, False)],
            [(40, True)]]


def test_a_run_logs_per_peer_scalars(reference_run):
    scalars = read_scalars(os.path.join(reference_run, "tensorboard"))
    steps = {tag: [step for step, _ in values] for tag, values in scalars.items()}
    assert steps["train/loss/deepfm"] == [10, 20, 30, 40, 50, 60]
    assert steps["valid/auc/dcn"] == steps["valid/logloss/ensemble"] == [20, 40, 60]
    for tag in ("train/learning_rate/dcn", "train/mutual/deepfm", "train/examples_per_sec"):
        assert tag in steps
    assert 0.0 < scalars["valid/auc/dcn"][-1][1] < 1.0


def test_a_resumed_run_shows_each_step_once(reference_run, tmp_path):
    """A run's files after a resume at step 45, as the trainer opens its writer then."""
    logdir = tmp_path / "tensorboard"
    shutil.copytree(os.path.join(reference_run, "tensorboard"), logdir)
    before = read_scalars(logdir)
    resumed = tensorboard.SummaryWriter(str(logdir), purge_step=45 + 1)
    resumed.scalars(50, {"train/loss/deepfm": -50.0})
    resumed.close()
    after = read_scalars(logdir)
    assert after["train/loss/deepfm"] == before["train/loss/deepfm"][:4] + [(50, -50.0)]
    assert after["valid/auc/dcn"] == before["valid/auc/dcn"][:2]  # 60 is gone until re-logged


def test_the_writer_does_not_import_tensorflow():
    code = "import sys, mlctr.run.tensorboard; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

