"""`python -m mlctr.main` with an interruption after a given step, for the resume tests.

    MLCTR_TEST_INTERRUPT=KILL:52 python -m tests.interrupt_run [mlctr.main flags]
    MLCTR_TEST_INTERRUPT=TERM:37 python -m tests.interrupt_run [mlctr.main flags]

KILL:N  after step N, once every checkpoint started before it is complete, the
        process SIGKILLs itself: whatever it did after its last checkpoint is lost,
        as when a machine dies.
TERM:N  after step N the process sends itself SIGTERM, as a scheduler does before
        preempting a job; the trainer must checkpoint and exit with status 143.
Everything else is the real entry point (flags, error handling, exit status).
"""
import os
import signal

from absl import app

from mlctr import main
from mlctr.run import checkpoint
from mlctr.run import train

KIND, _, AT_STEP = os.environ["MLCTR_TEST_INTERRUPT"].partition(":")
AT_STEP = int(AT_STEP)
managers = []

_original_init = checkpoint.RunCheckpoints.__init__


def _recording_init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    managers.append(self)


_original_step = train.make_step


def _interrupting_step(*args, **kwargs):
    step_fn = _original_step(*args, **kwargs)

    def step(state, *rest):
        out = step_fn(state, *rest)
        if int(out[0]["step"]) == AT_STEP:
            if KIND == "KILL":
                for manager in managers:
                    manager.wait()
                print(f"interrupt_run: SIGKILL after step {AT_STEP}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            elif KIND == "TERM":
                print(f"interrupt_run: SIGTERM after step {AT_STEP}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise ValueError(f"unknown interruption {KIND!r}")
        return out

    return step


checkpoint.RunCheckpoints.__init__ = _recording_init
train.make_step = _interrupting_step

if __name__ == "__main__":
    app.run(main.main)
