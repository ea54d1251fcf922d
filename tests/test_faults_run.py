"""Issue 26 (round two of "nothing silently wrong"), the run side: temporaries no one can
plant links under, permissions and full disks as one line, mesh errors as one line.

Each test names its fault class; `pytest -k "symlink or enospc or permission or mesh"`
runs them. The fault-case list these come from is in docs/reliability.md.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from mlctr import atomic
from mlctr.data import layout
from mlctr.run import checkpoint
from mlctr.run import inputs
from mlctr.run import logs
from mlctr.run import train
from mlctr.run.errors import RunError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(workdir, *flags, env=None):
    """`python -m mlctr.main` on the tiny config (its own synthetic rows)."""
    cmd = [sys.executable, "-m", "mlctr.main", "--config=mlctr/configs/tiny.py",
           "--config.mode=train", f"--workdir={workdir}", "--compilation_cache=", *flags]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


def _one_line(proc, *fragments):
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("mlctr: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_symlink_planted_at_workdir_temporary_names_is_not_followed(tmp_path):
    """metrics.jsonl, a checkpoint manifest, dataset.json and feature_map.json were
    rewritten through fixed temporary names (`X.tmp`): a link planted there redirected
    the write to any file the run can write."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / logs.METRICS_FILE).write_text('{"step": 1}\n{"step": 2}\n')
    names = [logs.METRICS_FILE + ".tmp", checkpoint.MANIFEST + ".tmp",
             inputs.DATASET_RECORD + ".tmp", f".tmp-{os.getpid()}-{layout.FEATURE_MAP}"]
    for name in names:
        os.symlink(victim, work / name)
    logs.MetricsWriter(str(work), start_step=1).close()
    checkpoint.write_manifest(str(work))
    inputs.write_dataset_record(str(work), "criteo", {"vocab_size": 3})
    layout.write_json_atomic(str(work / layout.FEATURE_MAP), {"a": 1})
    assert victim.read_text() == "keep me\n"
    assert (work / logs.METRICS_FILE).read_text() == '{"step": 1}\n'
    assert json.loads((work / inputs.DATASET_RECORD).read_text())["vocab_size"] == 3
    assert all(os.path.islink(work / name) for name in names)  # left as they were
    assert oct(os.stat(work / inputs.DATASET_RECORD).st_mode & 0o777) == oct(
        0o666 & ~atomic._umask())


def test_enospc_rewriting_metrics_leaves_no_tmp_and_is_one_line(tmp_path, monkeypatch):
    """A full disk while metrics.jsonl was rewritten on resume left `metrics.jsonl.tmp`
    behind and ended in an OSError traceback."""
    path = tmp_path / logs.METRICS_FILE
    path.write_text('{"step": 1}\n{"step": 2}\n')

    def full_disk(*_):
        yield '{"step": 1}\n'
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logs, "_records_up_to", full_disk)
    with pytest.raises(RunError, match=r"metrics\.jsonl: No space left on device; the run "
                                       r"stops here \(its last checkpoint is intact"):
        logs.MetricsWriter(str(tmp_path), start_step=1)
    assert sorted(os.listdir(tmp_path)) == [logs.METRICS_FILE]  # no temporary left
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'  # the old file intact


def test_enospc_appending_metrics_is_one_line(tmp_path, monkeypatch):
    writer = logs.MetricsWriter(str(tmp_path), start_step=0)
    writer.path = "/dev/full"  # every write: ENOSPC
    with pytest.raises(RunError, match=r"cannot write /dev/full: No space left on device"):
        writer.write({"step": 1})
    writer.close()


def test_permission_denied_workdir_is_one_line():
    """A read-only work dir (0555) was a PermissionError traceback from the lock file."""
    # Not under pytest's tmp tree: it is private to its user (a concurrent pytest makes
    # it so again), and user nobody must reach the work dir.
    root = tempfile.mkdtemp(prefix="mlctr-test-", dir="/tmp")
    os.chmod(root, 0o755)
    workdir = os.path.join(root, "ro")
    os.mkdir(workdir)
    os.chmod(workdir, 0o555)
    as_nobody = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                 if os.geteuid() == 0 else [])  # root writes anywhere
    code = ("from mlctr.configs import tiny; from mlctr.run import train\n"
            f"train.check_can_start(tiny.get_config(), {str(workdir)!r})")
    try:
        proc = subprocess.run([*as_nobody, sys.executable, "-c", code], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if "ModuleNotFoundError" in proc.stderr:
        pytest.skip("user nobody cannot import this checkout")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        f"mlctr.run.errors.RunError: the work dir {workdir} is not writable by this user "
        "(mode 555): fix its permissions or pass another --workdir"), proc.stderr[-2000:]


@pytest.mark.parametrize("flags, fragments", [
    (["--config.mesh.table=3"], ["config.mesh (data=-1, peer=1, table=3) does not fit the 4",
                                 "mesh.peer = 1 x mesh.table = 3 does not divide the 4 devices"]),
    (["--config.mesh.data=3", "--config.mesh.peer=1"], ["mesh.data x mesh.peer = 3 x 1 = 3, "
                                                        "but there are 4 devices"]),
    (["--config.mesh.table=2", "--config.mesh.data=2", "--config.train.batch_size=66"],
     ["config.train.batch_size: batch size 66 is not a multiple of mesh.data = 2 x "
      "mesh.table = 2"]),
])
def test_mesh_mismatch_is_one_line(tmp_path, flags, fragments):
    """A mesh that does not fit the devices, or a batch it cannot split, had a clear
    message that arrived as a ValueError traceback."""
    proc = _main(tmp_path / "run", f"--config.data.data_dir={tmp_path / 'data'}",
                 "--config.data.num_rows=600", *flags,
                 env={"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
                      + " --xla_force_host_platform_device_count=4"})
    _one_line(proc, *fragments)


def test_sigterm_while_compiling_stops_within_seconds(tmp_path):
    """SIGTERM while XLA compiled (`peers=deepfm*1000`: 10 minutes) was ignored until
    the compilation ended; the main thread is blocked here as a compilation blocks it."""
    cmd = [sys.executable, "-m", "tests.interrupt_run",
           "--config=mlctr/configs/tiny.py", "--config.mode=train", "--compilation_cache=",
           f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path / 'data'}",
           "--config.data.num_rows=600"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "JAX_PLATFORMS": "cpu",
                                            "MLCTR_TEST_INTERRUPT": "STUCK:0"})
    for line in proc.stdout:  # the signal is sent now
        if line.startswith("interrupt_run: SIGTERM"):
            break
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM while compiling did not stop the run within 15 s")
    stderr = proc.stderr.read()
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = [l for l in stderr.splitlines() if l.startswith("mlctr: stopped on SIGTERM")]
    assert lines == ["mlctr: stopped on SIGTERM while compiling and training, with nothing "
                     "unsaved; rerun the same command to resume"], stderr[-2000:]


@pytest.mark.parametrize("flag, part", [
    ("--config.models.deepfm.embedding_dim=10000000", "state "),
    ("--config.models.dcn.dnn_hidden_units=(1000000,1000000)", "state "),
    ("--config.train.eval_batch_size=1000000000", "(eval_batch_size 1000000000)"),
])
def test_oversize_config_is_refused_before_building(tmp_path, flag, part):
    """A state or an evaluation that cannot fit hung in the first device_get or failed
    at the first evaluation (issue 26): refused at start with the estimate and limit."""
    proc = _main(tmp_path / "run", f"--config.data.data_dir={tmp_path / 'data'}",
                 "--config.data.num_rows=600", flag)
    line = _one_line(proc, "the run needs at least", part, "more than the")
    assert ("MemAvailable" in line or "bytes_limit" in line or "sysconf" in line), line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_symlink_planted_at_generator_and_best_temporaries_is_not_followed(tmp_path):
    """The synthetic generator wrote `<raw>.tmp`, `<prob>.tmp.npy`, `<spec>.tmp`, and the
    best weights `best.tmp` / `best.old`, all fixed names a link could redirect."""
    from mlctr.data import synthetic

    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    (victim_dir / "keep").write_text("keep me\n")
    raw = tmp_path / "gen" / "raw.txt"
    raw.parent.mkdir()
    for name in (str(raw) + ".tmp", synthetic.true_prob_path(str(raw)) + ".tmp.npy",
                 synthetic.spec_path(str(raw)) + ".tmp"):
        os.symlink(victim, name)
    synthetic.generate(str(raw), num_rows=50, seed=1)
    assert victim.read_text() == "keep me\n" and len(raw.read_text().splitlines()) == 50
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.tmp", "best.old"):
        os.symlink(victim_dir, run / name)
    weights = {"deepfm": {"params": {"w": np.ones(3, np.float32)}, "batch_stats": {}}}
    checkpoint.save_peer_weights(str(run), weights)
    assert sorted(os.listdir(victim_dir)) == ["keep"]
    np.testing.assert_array_equal(
        checkpoint.load_peer_weights(str(run))["deepfm"]["params"]["w"], np.ones(3))
