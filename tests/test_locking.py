"""Tests for mlctr.locking: one process per directory, and no stale lock after a crash."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mlctr import locking

_HOLDER = textwrap.dedent("""
    import sys, time
    from mlctr import locking
    with locking.exclusive_lock(sys.argv[1], "train"):
        print("locked", flush=True)
        time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
    """A child process holding the lock on tmp_path/run until killed."""
    directory = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, directory],
                            stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.stdout.readline().strip() == "locked"
    yield directory, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_lock_second_process_gets_one_line(holder):
    directory, proc = holder
    with pytest.raises(locking.LockedError) as e:
        with locking.exclusive_lock(directory, "train"):
            pass
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{directory} is in use by pid {proc.pid} on host ")
    assert "another run or prepare" in message


def test_lock_released_when_holder_is_killed(holder):
    directory, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with locking.exclusive_lock(directory, "prepare"):
        with open(os.path.join(directory, locking.LOCK_NAME)) as f:
            assert f'"pid": {os.getpid()}' in f.read()


def test_lock_reentry_after_exit_and_nested_refused(tmp_path):
    directory = str(tmp_path / "d")
    with locking.exclusive_lock(directory, "train"):
        # A second open file description in the same process conflicts too.
        with pytest.raises(locking.LockedError):
            with locking.exclusive_lock(directory, "train"):
                pass
    with locking.exclusive_lock(directory, "train"):
        pass


def test_lock_garbage_lock_file_is_taken_over(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / locking.LOCK_NAME).write_text("not json {")
    with locking.exclusive_lock(str(directory), "train"):
        pass
