"""prepare() under faults: nothing lost, one clear line (overwrite, lock, full disk, --out)."""

import errno
import os
import stat
import subprocess
import sys

import pytest

from mlctr import locking
from mlctr.data import DataError, layout, vocab
from mlctr.data.errors import DatasetError
from mlctr.data.prepare import prepare
from mlctr.data.reader import PreparedDataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _snapshot(directory):
    """{relative path: bytes} of every file under `directory` except the lock file."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if name != locking.LOCK_NAME:
                with open(path, "rb") as f:
                    found[os.path.relpath(path, directory)] = f.read()
    return found


@pytest.fixture
def previous(synthetic_criteo, tmp_path):
    """A prepared dataset in tmp_path/out, with a file of the user's beside it."""
    out = tmp_path / "out"
    prepare("criteo", synthetic_criteo, str(out))
    (out / "notes.txt").write_text("mine")
    return out


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "mlctr.data.prepare", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def _one_error_line(result) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_prepare_overwrite_required_to_replace_a_dataset(previous, synthetic_criteo):
    before = _snapshot(previous)
    with pytest.raises(DatasetError, match="already holds a prepared dataset; pass "
                       "--overwrite") as error:
        prepare("criteo", synthetic_criteo, str(previous), seed=5)
    assert error.value.reason == "output_exists" and _snapshot(previous) == before
    feature_map = prepare("criteo", synthetic_criteo, str(previous), seed=5, overwrite=True)
    assert feature_map["seed"] == 5 and PreparedDataset(str(previous)).feature_map["seed"] == 5
    assert (previous / "notes.txt").read_text() == "mine"  # not a dataset file: kept
    assert sorted(os.listdir(previous.parent)) == ["out"]  # no build directory left


def test_prepare_wrong_dataset_keeps_the_previous_one(previous, synthetic_criteo):
    before = _snapshot(previous)
    with pytest.raises(DataError, match="bad_header|header|column"):
        prepare("avazu", synthetic_criteo, str(previous), overwrite=True)
    assert _snapshot(previous) == before
    PreparedDataset(str(previous), expected_dataset="criteo")


@pytest.mark.parametrize("failing", ["ids", "vocab", "feature_map"])
def test_prepare_enospc_keeps_the_previous_dataset(previous, synthetic_criteo, monkeypatch,
                                                   failing):
    before = _snapshot(previous)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    target = {"ids": (layout.NpyWriter, "append"), "vocab": (vocab,
                                                           "save_vocabulary"),
              "feature_map": (layout, "write_json_atomic")}[failing]
    monkeypatch.setattr(*target, full)
    with pytest.raises(DatasetError) as error:
        prepare("criteo", synthetic_criteo, str(previous), seed=3, overwrite=True)
    message = str(error.value)
    assert error.value.reason == "no_space" and "\n" not in message
    assert message.startswith(f"{previous}: no space left on the device while writing ")
    assert "GiB free now" in message and "nothing was changed" in message
    assert _snapshot(previous) == before
    assert sorted(os.listdir(previous.parent)) == ["out"]
    PreparedDataset(str(previous)).verify()


def test_prepare_lock_second_prepare_gets_one_line(previous, synthetic_criteo):
    before = _snapshot(previous)
    with locking.exclusive_lock(str(previous), "prepare"):
        with pytest.raises(locking.LockedError, match=f"{previous} is in use by pid "
                           f"{os.getpid()}"):
            prepare("criteo", synthetic_criteo, str(previous), overwrite=True)
        result = _cli("--dataset=criteo", f"--raw={synthetic_criteo}", f"--out={previous}",
                      "--overwrite")
    assert f"{previous} is in use by pid {os.getpid()}" in _one_error_line(result)
    assert _snapshot(previous) == before


def test_prepare_lock_is_released_and_kept_in_out(previous, synthetic_criteo):
    prepare("criteo", synthetic_criteo, str(previous), overwrite=True)
    assert os.path.exists(previous / locking.LOCK_NAME)
    with locking.exclusive_lock(str(previous), "prepare"):
        pass


def test_prepare_removes_builds_a_killed_prepare_left(previous, synthetic_criteo):
    stale = previous.parent / ".out.prepare-abc123"
    stale.mkdir()
    (stale / "train_ids.npy").write_bytes(b"half")
    prepare("criteo", synthetic_criteo, str(previous), overwrite=True)
    assert not stale.exists()


def test_prepare_files_are_readable_by_others(synthetic_criteo, tmp_path):
    umask = os.umask(0o022)
    try:
        prepare("criteo", synthetic_criteo, str(tmp_path / "out"))
    finally:
        os.umask(umask)
    for root, dirs, files in os.walk(tmp_path / "out"):
        for name in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o755, name
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o644, name
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o755


@pytest.mark.parametrize("case", ["a_file", "under_proc", "unwritable"])
def test_prepare_bad_out_is_one_line(synthetic_criteo, tmp_path, case):
    if case == "a_file":
        out = tmp_path / "file"
        out.write_text("x")
        says = "exists and is not a directory"
    elif case == "under_proc":
        out = "/proc/mlctr-dataset"
        says = "cannot write /proc/mlctr-dataset"
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere")
        parent = tmp_path / "read_only"
        parent.mkdir(mode=0o555)
        out = parent / "out"
        says = f"no write permission in {parent}"
    with pytest.raises(DatasetError, match=says):
        prepare("criteo", synthetic_criteo, str(out))
    assert says in _one_error_line(
        _cli("--dataset=criteo", f"--raw={synthetic_criteo}", f"--out={out}"))


def test_prepare_unknown_dataset_and_missing_raw_are_one_line(previous, tmp_path):
    before = _snapshot(previous)
    line = _one_error_line(_cli("--dataset=kriteo", f"--raw={tmp_path}/x", f"--out={previous}"))
    assert "unknown dataset 'kriteo'" in line
    line = _one_error_line(_cli("--dataset=criteo", f"--raw={tmp_path}/none.txt",
                                f"--out={previous}", "--overwrite"))
    assert f"{tmp_path}/none.txt: no such file" in line
    assert _snapshot(previous) == before


def test_prepare_failure_leaves_no_new_out_directory(synthetic_criteo, tmp_path):
    with pytest.raises(DataError):
        prepare("avazu", synthetic_criteo, str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()
