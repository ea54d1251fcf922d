"""Opening a prepared dataset validates it: each bad dataset is one DatasetError line."""

import json
import os
import shutil

import numpy as np
import pytest

from mlctr.data import DataError, layout, validation
from mlctr.data.errors import DatasetError
from mlctr.data.prepare import prepare
from mlctr.data.reader import PreparedDataset


@pytest.fixture(scope="module")
def prepared_once(synthetic_criteo, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared") / "criteo")
    prepare("criteo", synthetic_criteo, out, protocol="x4_002")
    return out


@pytest.fixture
def data_dir(prepared_once, tmp_path):
    """A fresh copy of a 3000-row prepared Criteo-format dataset, to damage."""
    out = str(tmp_path / "data")
    shutil.copytree(prepared_once, out)
    return out


def _edit_map(data_dir, edit):
    path = layout.feature_map_path(data_dir)
    with open(path) as f:
        feature_map = json.load(f)
    edit(feature_map)
    with open(path, "w") as f:
        json.dump(feature_map, f)


def _edit_array(path, edit):
    array = np.load(path)
    edit(array)
    np.save(path, array)


def _open_error(data_dir, file_name, *, expected_dataset=None, field=None) -> DatasetError:
    """The DatasetError opening data_dir raises: one line naming the file (and field)."""
    with pytest.raises(DatasetError) as error:
        PreparedDataset(data_dir, expected_dataset=expected_dataset)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(os.path.join(data_dir, file_name) + ": "), message
    if field is not None:
        assert error.value.field == field and f"field {field}: " in message
    assert isinstance(error.value, DataError)  # what the CLIs already catch
    return error.value


def test_validate_accepts_a_sound_dataset_and_a_full_verify(data_dir):
    dataset = PreparedDataset(data_dir, expected_dataset="criteo")
    dataset.verify()
    assert dataset.num_examples("train") == 2400


def test_validate_edited_vocab_size_names_the_field(data_dir):
    def grow(feature_map):
        assert feature_map["fields"][15]["name"] == "C3"
        feature_map["fields"][15]["vocab_size"] += 5
    _edit_map(data_dir, grow)
    error = _open_error(data_dir, "feature_map.json", field="C3")
    assert error.reason == "vocab_size" and "vocab/C3.npy holds" in str(error)


def test_validate_edited_total_vocab_size(data_dir):
    _edit_map(data_dir, lambda m: m.update(vocab_size=m["vocab_size"] + 1))
    assert "add up to" in str(_open_error(data_dir, "feature_map.json"))


def test_validate_edited_offset(data_dir):
    _edit_map(data_dir, lambda m: m["fields"][5].update(offset=m["fields"][5]["offset"] - 1))
    _open_error(data_dir, "feature_map.json", field="I6")


def test_validate_checksum_of_an_edited_feature_map(data_dir):
    _edit_map(data_dir, lambda m: m.update(seed=7))
    assert _open_error(data_dir, "feature_map.json").reason == "checksum"


@pytest.mark.parametrize("value", ["past_end", -1])
def test_validate_id_out_of_range_names_file_field_and_row(data_dir, value):
    feature_map = layout.read_feature_map(data_dir)
    field = feature_map["fields"][20]
    bad = field["offset"] + field["vocab_size"] if value == "past_end" else value

    def damage(ids):
        ids[123, 20] = bad
    _edit_array(layout.ids_path(data_dir, "valid"), damage)
    error = _open_error(data_dir, "valid_ids.npy", field=field["name"])
    assert error.reason == "id_out_of_range"
    assert f"row 123: id {bad} outside" in str(error)


def test_validate_label_not_0_or_1(data_dir):
    def damage(labels):
        labels[17] = 7
    _edit_array(layout.label_path(data_dir, "test"), damage)
    error = _open_error(data_dir, "test_label.npy")
    assert "row 17: label 7, expected 0 or 1" in str(error)


@pytest.mark.parametrize("split,file_name", [("train", "train_ids.npy"),
                                             ("valid", "valid_label.npy")])
def test_validate_truncated_file(data_dir, split, file_name):
    path = os.path.join(data_dir, file_name)
    os.truncate(path, os.path.getsize(path) - 10)
    error = _open_error(data_dir, file_name)
    assert error.reason == "bad_size" and "truncated" in str(error)


@pytest.mark.parametrize("text,says", [("", "empty"), ("{not json", "not valid JSON"),
                                       ("[1, 2]", "not an object"),
                                       ('{"format_version": 2}', "missing key 'dataset'")])
def test_validate_empty_or_garbage_feature_map(data_dir, text, says):
    with open(layout.feature_map_path(data_dir), "w") as f:
        f.write(text)
    assert says in str(_open_error(data_dir, "feature_map.json"))


def test_validate_missing_feature_map(data_dir):
    os.remove(layout.feature_map_path(data_dir))
    assert "not a complete prepared dataset" in str(_open_error(data_dir, "feature_map.json"))


def test_validate_wrong_num_fields(data_dir):
    _edit_map(data_dir, lambda m: m.update(num_fields=38))
    assert "num_fields is 38 but 39 fields" in str(_open_error(data_dir, "feature_map.json"))


def test_validate_wrong_num_examples(data_dir):
    _edit_map(data_dir, lambda m: m["splits"]["valid"].update(num_examples=301))
    error = _open_error(data_dir, "valid_ids.npy")
    assert error.reason == "bad_shape" and "splits.valid.num_examples" in str(error)


def test_validate_missing_valid_split(data_dir):
    os.remove(layout.ids_path(data_dir, "valid"))
    assert _open_error(data_dir, "valid_ids.npy").reason == "missing_file"


def test_validate_garbled_npy_header(data_dir):
    with open(layout.ids_path(data_dir, "train"), "r+b") as f:
        f.seek(12)
        f.write(b"\x00garbage}{((")
    assert _open_error(data_dir, "train_ids.npy").reason == "bad_npy"


def test_validate_float_ids(data_dir):
    path = layout.ids_path(data_dir, "train")
    np.save(path, np.load(path).astype(np.float32))
    error = _open_error(data_dir, "train_ids.npy")
    assert "dtype float32, expected int32" in str(error)


def test_validate_dataset_kind(data_dir):
    error = _open_error(data_dir, "feature_map.json", expected_dataset="avazu")
    assert error.reason == "wrong_dataset" and "holds a 'criteo' dataset" in str(error)


def test_dataset_checksum_catches_in_range_damage(data_dir):
    feature_map = layout.read_feature_map(data_dir)
    field = feature_map["fields"][30]

    def damage(ids):  # another valid id of the same field: only a checksum sees it
        ids[1000, 30] = field["offset"] + (ids[1000, 30] - field["offset"] + 1) % \
            field["vocab_size"]
    _edit_array(layout.ids_path(data_dir, "train"), damage)
    error = _open_error(data_dir, "train_ids.npy")
    assert error.reason == "checksum" and "content changed after prepare" in str(error)


def test_dataset_checksum_full_verify_reads_every_block(synthetic_criteo, tmp_path,
                                                         monkeypatch):
    monkeypatch.setattr(layout, "CHECKSUM_BLOCK_BYTES", 4096)
    out = str(tmp_path / "data")
    prepare("criteo", synthetic_criteo, out)
    path = layout.ids_path(out, "train")
    assert os.path.getsize(path) > 10 * 4096
    ids = np.load(path, mmap_mode="r+")
    rows = np.arange(5 * 4096 // ids[0].nbytes + 1, 6 * 4096 // ids[0].nbytes - 1)
    first = rows[0]  # two different ids of field 0, both in block 5, swapped
    second = rows[np.flatnonzero(ids[rows, 0] != ids[first, 0])[0]]
    ids[first, 0], ids[second, 0] = ids[second, 0], ids[first, 0]
    ids.flush()
    del ids
    monkeypatch.setattr(validation, "SAMPLED_BLOCKS", 0)  # opening checks blocks 0 and last
    dataset = PreparedDataset(out)
    with pytest.raises(DatasetError, match="content changed after prepare: CRC-32 of bytes "
                       f"{5 * 4096}..{6 * 4096}"):
        dataset.verify()


def test_validate_opens_a_version_1_dataset_without_checksums(data_dir):
    _edit_map(data_dir, lambda m: (m.pop("checksums"), m.update(format_version=1)))
    assert PreparedDataset(data_dir).num_examples("valid") == 300
