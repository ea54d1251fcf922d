"""A minimal TensorBoard event-file writer for scalars (no TensorFlow, no protobuf).

TensorBoard reads `events.out.tfevents.*` files: TFRecord frames (length, masked CRC-32C
of the length, payload, masked CRC-32C of the payload) whose payloads are serialized
`tensorflow.Event` protos. Scalars need only a few proto fields, so they are encoded by
hand here rather than pulling in tensorboardX/protobuf for them:

  Event         wall_time (1, double), step (2, int64), file_version (3, string),
                summary (5, Summary), session_log (7, SessionLog)
  Summary       value (1, repeated Value)
  Summary.Value tag (1, string), simple_value (2, float)
  SessionLog    status (1, enum; START = 1)

A resumed run starts its new file with SessionLog START at the resume step + 1, which
tells TensorBoard to drop what the interrupted process logged after its last checkpoint
(the same mechanism as tensorboardX's `purge_step`).
"""
from __future__ import annotations

import os
import socket
import struct
import time


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_event(step: int, *, wall_time: float | None = None, scalars: dict | None = None,
                 file_version: str | None = None, session_start: bool = False) -> bytes:
    """One serialized Event proto."""
    out = bytearray(struct.pack("<Bd", 1 << 3 | 1, time.time() if wall_time is None else wall_time))
    out += _varint(2 << 3) + _varint(int(step))
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode())
                              + struct.pack("<Bf", 2 << 3 | 5, float(value)))
            for tag, value in scalars.items())
        out += _length_delimited(5, values)
    if session_start:
        out += _length_delimited(7, _varint(1 << 3) + _varint(1))
    return bytes(out)


def frame(record: bytes) -> bytes:
    """A TFRecord frame around one record."""
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", masked_crc32c(length)) + record
            + struct.pack("<I", masked_crc32c(record)))


class SummaryWriter:
    """Writes scalars to a new event file in `logdir` (call only on process 0).

    Args:
      logdir: directory of the event files (created).
      purge_step: if set, TensorBoard discards this run's earlier events with a step
        >= purge_step (used when a run resumes from a checkpoint).
    """

    def __init__(self, logdir: str, purge_step: int | None = None):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")
        self._write(encode_event(0, file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(encode_event(purge_step, session_start=True))
        self.flush()

    def _write(self, record: bytes):
        self._file.write(frame(record))

    def scalars(self, step: int, values: dict[str, float]):
        """Writes {tag: value} at `step`; tags like 'train/loss/deepfm' group in the UI."""
        self._write(encode_event(step, scalars=values))

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()
