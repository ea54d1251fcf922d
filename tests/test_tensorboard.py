"""The minimal TensorBoard event writer (mlctr/tensorboard.py), read back by a decoder
written from the TFRecord and Event proto specifications."""
import glob
import os
import struct

from mlctr import tensorboard


def read_records(path):
    """TFRecord payloads, checking both CRCs of every frame."""
    records = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert length_crc == tensorboard.masked_crc32c(header)
        payload = data[pos + 12:pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert payload_crc == tensorboard.masked_crc32c(payload)
        records.append(payload)
        pos += 16 + length
    return records


def fields(buffer):
    """(field number, value) pairs of a protobuf message (varint, 64/32-bit, bytes)."""
    out, pos = [], 0

    def varint():
        nonlocal pos
        value = shift = 0
        while True:
            byte = buffer[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while pos < len(buffer):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 1:
            out.append((number, struct.unpack("<d", buffer[pos:pos + 8])[0]))
            pos += 8
        elif wire == 5:
            out.append((number, struct.unpack("<f", buffer[pos:pos + 4])[0]))
            pos += 4
        else:
            length = varint()
            out.append((number, buffer[pos:pos + length]))
            pos += length
    return out


def decode_event(record):
    """{'step', 'file_version', 'scalars': {tag: value}, 'session_start'}."""
    event = {"step": 0, "scalars": {}, "session_start": False}
    for number, value in fields(record):
        if number == 2:
            event["step"] = value
        elif number == 3:
            event["file_version"] = value.decode()
        elif number == 5:
            for _, summary_value in fields(value):
                parts = dict(fields(summary_value))
                event["scalars"][parts[1].decode()] = parts[2]
        elif number == 7:
            event["session_start"] = dict(fields(value)).get(1) == 1
    return event


def test_crc32c_check_value():
    assert tensorboard.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_writer_round_trip(tmp_path):
    writer = tensorboard.SummaryWriter(str(tmp_path), purge_step=41)
    writer.scalars(41, {"train/loss/deepfm": 0.5, "valid/auc/dcn": 0.75})
    writer.close()
    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    events = [decode_event(r) for r in read_records(path)]
    assert events[0]["file_version"] == "brain.Event:2"
    assert events[1]["session_start"] and events[1]["step"] == 41  # drops older steps >= 41
    assert events[2]["step"] == 41
    assert events[2]["scalars"] == {"train/loss/deepfm": 0.5, "valid/auc/dcn": 0.75}


def test_a_run_logs_per_peer_scalars(reference_run):
    (path,) = glob.glob(os.path.join(reference_run, "tensorboard", "events.out.tfevents.*"))
    events = [decode_event(r) for r in read_records(path)]
    steps = {}
    for event in events:
        for tag in event["scalars"]:
            steps.setdefault(tag, []).append(event["step"])
    assert steps["train/loss/deepfm"] == [10, 20, 30, 40, 50, 60]
    assert steps["valid/auc/dcn"] == steps["valid/logloss/ensemble"] == [20, 40, 60]
    for tag in ("train/learning_rate/dcn", "train/mutual/deepfm", "train/examples_per_sec"):
        assert tag in steps
