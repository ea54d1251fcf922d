"""SIGTERM ends a run within seconds in every phase, compilation included.

Python runs a signal handler only between bytecodes of the main thread: while XLA
compiles a step (minutes for `peers=deepfm*1000`) or a jitted call runs, the handler of
`loop.PreemptionWatcher` waits, and a scheduler's SIGTERM was ignored until its
SIGKILL. Here the C-level handler's wakeup byte (`signal.set_wakeup_fd`)
reaches a watcher thread at once, whatever the main thread is doing:

* nothing is unsaved (setting up, opening data, compiling the first step, evaluating
  and exporting after the final checkpoint): the process says so in one line and
  exits 143 at once; the same command resumes from the newest checkpoint.
* steps ran since the last checkpoint: the training loop saves them at its next step
  boundary and stops (`loop.TrainLoop.stop_if_preempted`); if it has not done so
  within `GRACE_SECONDS` (a long compilation or evaluation), the process exits,
  naming the checkpoint the rerun resumes from.

One process only: in a multi-process job JAX's preemption service owns SIGTERM.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

# How long the loop may take to reach a step boundary and save after a SIGTERM before
# the process exits without that save (schedulers commonly SIGKILL after 30 s).
GRACE_SECONDS = 20.0

PREEMPTED_EXIT_CODE = 143

# After the loop's save, the time its own stop line and exit may take.
SAID_SECONDS = 5.0


class _State:
    """What the watcher thread needs to know about the main thread's progress."""

    def __init__(self):
        self.lock = threading.Lock()
        self.unsaved_since: int | None = None  # the last saved step, while steps are unsaved
        self.phase = "setting up"


_STATE = _State()
_installed = False


def set_phase(phase: str) -> None:
    """Names what the run does now (said in the stop line)."""
    with _STATE.lock:
        _STATE.phase = phase


def mark_unsaved(last_saved_step: int | None) -> None:
    """Steps ran after the checkpoint of `last_saved_step` (None: none saved yet)."""
    with _STATE.lock:
        _STATE.unsaved_since = -1 if last_saved_step is None else last_saved_step


def mark_saved() -> None:
    """Every step so far is in a complete checkpoint (or none ran)."""
    with _STATE.lock:
        _STATE.unsaved_since = None


def _say(line: str) -> None:
    try:
        os.write(sys.stderr.fileno(), (line + "\n").encode())
    except (AttributeError, OSError, ValueError):
        pass


def _stop_now(reason: str) -> None:
    _say(f"mlctr: stopped on SIGTERM {reason}; rerun the same command to resume")
    os._exit(PREEMPTED_EXIT_CODE)


def _on_sigterm() -> None:
    with _STATE.lock:
        unsaved, phase = _STATE.unsaved_since, _STATE.phase
    if unsaved is None:
        _stop_now(f"while {phase}, with nothing unsaved")
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:  # the loop saves at its next step boundary
        time.sleep(0.1)
        with _STATE.lock:
            saved = _STATE.unsaved_since is None
        if saved:  # the main thread says where it stopped and exits; if it goes on:
            time.sleep(SAID_SECONDS)
            _stop_now(f"while {_STATE.phase}, after saving a checkpoint")
    where = ("no checkpoint was written yet: the rerun starts over" if unsaved < 0
             else "the rerun resumes from the newest complete checkpoint, step "
                  f"{unsaved} or before")
    _stop_now(f"while {phase}: it did not reach a step boundary within {GRACE_SECONDS:.0f} s "
              f"to save, so the steps after the last checkpoint are not saved ({where})")


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM in data:
            _on_sigterm()


def _python_handler(signum, frame):
    """The Python-level handler (outside the training loop): the watcher thread acts."""
    del signum, frame


def install() -> bool:
    """Starts the watcher (main thread of a one-process job only); True if it runs.

    Keeps any Python-level SIGTERM handler a caller installed later (the training
    loop's) working: the wakeup byte is written whatever handler Python calls.
    """
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.signal(signal.SIGTERM, _python_handler)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read_fd,), daemon=True,
                     name="mlctr-sigterm").start()
    _installed = True
    return True
