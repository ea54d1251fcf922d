"""The exceptions a training run stops with, each carrying a complete one-line message.

`mlctr.main` prints these as one `mlctr: ...` line and exits with a status (no
traceback): they are expected faults (a bad config, a busy or unusable work dir, a
NaN loss, a preemption), not bugs.
"""


class RunError(RuntimeError):
    """A run cannot start or go on: its work dir, config or dataset is unusable."""


class NonFiniteLossError(FloatingPointError):
    """A peer's training loss became NaN or inf."""


class Preempted(Exception):
    """The run stopped on SIGTERM after saving a checkpoint; rerun the command to resume."""

    def __init__(self, step: int, directory: str):
        super().__init__(f"stopped on SIGTERM at step {step} after saving a checkpoint in "
                         f"{directory}; rerun the same command to resume")
        self.step = step
