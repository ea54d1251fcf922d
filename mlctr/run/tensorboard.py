"""TensorBoard scalars for a run, written with tensorboardX (no TensorFlow needed).

tensorboardX writes standard `events.out.tfevents.*` files with only numpy and protobuf
(clu's and flax's writers import TensorFlow). Scalars go through its synchronous
`EventsWriter`, the file writer under `tensorboardX.SummaryWriter`: SummaryWriter hands
events to a background thread that writes them to disk only every `flush_secs` (120 s)
or on close, and its `flush()` does not wait for that thread, so a killed run would lose
scalars logged before its last checkpoint, which the resumed run never logs again. Here
`flush()` returns with every scalar on disk.

A run that resumes from a checkpoint at step k passes `purge_step=k + 1`. A
`tensorboardX.SummaryWriter(purge_step=k + 1)` opened and closed at once writes the
purge marker, in a file of its own that sorts before the new scalars' file; TensorBoard
then drops every tag's events that the interrupted process logged at steps >= k + 1,
so the curves read as one run.
"""
from __future__ import annotations

import os
import time

import tensorboardX
from tensorboardX import summary as tbx_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary


def _unique_suffix() -> str:
    """An event file name suffix that is unique and sorts in the order files are opened.

    tensorboardX names a file by the second it was opened in and opens it with "wb": a
    resume within the same second would truncate the interrupted run's file. The
    nanosecond clock keeps names unique and in the order TensorBoard reads them (sorted
    by name, which the purge relies on).
    """
    return f".{time.time_ns()}.{os.getpid()}"


class SummaryWriter:
    """Writes scalars to a new event file in `logdir` (call only on process 0).

    Args:
        logdir: directory of the event files (created).
        purge_step: if set, TensorBoard discards this run's earlier events with a step
            >= purge_step (used when a run resumes from a checkpoint).
    """

    def __init__(self, logdir: str, purge_step: int | None = None):
        os.makedirs(logdir, exist_ok=True)
        if purge_step is not None:
            marker = tensorboardX.SummaryWriter(logdir, purge_step=int(purge_step),
                                                filename_suffix=_unique_suffix())
            marker.close()  # waits for its writer thread: the marker is on disk
        self._events = EventsWriter(os.path.join(logdir, "events"), _unique_suffix())
        self._closed = False
        self.flush()

    def scalars(self, step: int, values: dict[str, float]):
        """Writes {tag: value} at `step`; tags like 'train/loss/deepfm' group in the UI."""
        summary = Summary()
        for tag, value in values.items():
            summary.value.extend(tbx_summary.scalar(tag, float(value)).value)
        self._events.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self):
        """Writes what was logged so far to disk."""
        self._events.flush()

    def close(self):
        """Flushes and closes the file; later calls do nothing."""
        if not self._closed:
            self._events.close()
            self._closed = True
