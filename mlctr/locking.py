"""An exclusive lock on a run or dataset directory, so two processes never write one.

Two `train` runs resuming in one workdir would both append to metrics.jsonl and race on
checkpoints; two `prepare` into one `--out` would interleave files. `exclusive_lock`
takes an `fcntl.flock` on `<directory>/.lock`. The kernel releases a flock when its
holder exits or dies (even by SIGKILL), so a crash never leaves a stale lock and no
"is that pid still alive" guess is needed: the pid, host and start time written into the
file serve only to tell the second process who holds the directory.

flock is advisory and local to one kernel's view of the file system; on network file
systems that do not forward flock (some NFS setups) two hosts may both succeed. On a
multi-host run only process 0 should take the lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from typing import Iterator

LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """Another live process holds the directory's lock."""


def _holder(lock_file) -> str:
    """Describes the holder recorded in an open lock file, for the error message."""
    try:
        lock_file.seek(0)
        info = json.loads(lock_file.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since "
            f"{info.get('since', '?')}")


@contextlib.contextmanager
def exclusive_lock(directory: str, what: str) -> Iterator[None]:
    """Holds an exclusive lock on `directory` for the duration of the block.

    Args:
        directory: the directory to lock; created if missing. The lock file is
            `<directory>/.lock`; it is left in place on exit (removing it would let a
            third process lock a fresh inode while a second still waits on the old one).
        what: what the holder does with the directory ("train", "prepare"), recorded in
            the lock file.

    Raises:
        LockedError: at once (no waiting) when another process holds the lock; one line
            naming the directory and the holder's pid, host and start time.
        OSError: the directory cannot be created or the lock file cannot be opened.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as lock_file:
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise LockedError(
                f"{directory} is in use by {_holder(lock_file)} (another run or "
                f"prepare); wait for it or use another directory") from None
        try:
            lock_file.seek(0)
            lock_file.truncate()
            lock_file.write(json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "what": what,
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n")
            lock_file.flush()
            yield
        finally:
            # Closing the file (the `with`) releases the flock; unlock first so a waiter
            # never reads the old holder's record after it has let go.
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
