"""prepare(): determinism, the 8:1:1 split, vocabularies and OOV, encode_raw."""

import collections
import json
import os

import numpy as np
import pytest

from mlctr.data import criteo, encode_raw, parsing, split, vocab
from mlctr.data.prepare import encoders, prepare
from mlctr.data.reader import PreparedDataset


def _files(directory):
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if name == ".lock":  # who held it, and when: not dataset content
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = f.read()
    return found


def test_same_file_and_seed_give_identical_bytes(synthetic_criteo, tmp_path):
    first = prepare("criteo", synthetic_criteo, str(tmp_path / "a"))
    prepare("criteo", synthetic_criteo, str(tmp_path / "b"), chunk_bytes=10_000)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == sorted(b) and "feature_map.json" in a
    assert all(a[name] == b[name] for name in a)
    other = prepare("criteo", synthetic_criteo, str(tmp_path / "c"), seed=1)
    assert _files(tmp_path / "c")["valid_ids.npy"] != a["valid_ids.npy"]
    sizes = [first["splits"][s]["num_examples"] for s in ("train", "valid", "test")]
    assert sizes == [2400, 300, 300]
    assert other["source"]["sha256"] == first["source"]["sha256"]


def test_split_is_8_1_1_per_block_and_chunking_independent():
    whole = split.assign_splits(0, 1003, seed=2018)
    pieces = np.concatenate([split.assign_splits(s, min(97, 1003 - s), 2018)
                             for s in range(0, 1003, 97)])
    np.testing.assert_array_equal(whole, pieces)
    blocks = whole[:1000].reshape(-1, 10)
    assert ((blocks == split.TEST).sum(1) == 1).all()
    assert ((blocks == split.VALID).sum(1) == 1).all()
    assert not np.array_equal(whole, split.assign_splits(0, 1003, seed=2019))


@pytest.mark.parametrize("protocol,min_count", [("x4_001", 10), ("x4_002", 2)])
def test_vocabulary_fit_on_train_with_min_count_and_oov(criteo_files, criteo_reference,
                                                       tmp_path, protocol, min_count):
    path = max(criteo_files, key=os.path.getsize)
    feature_map = prepare("criteo", path, str(tmp_path), protocol=protocol)
    assert feature_map["min_count"] == min_count
    keys, labels = criteo_reference(path)
    splits = split.assign_splits(0, len(labels), feature_map["seed"])
    dataset = PreparedDataset(str(tmp_path))
    for f, field in enumerate(feature_map["fields"]):
        counts = collections.Counter(keys[splits == split.TRAIN, f].tolist())
        missing = criteo.MISSING_KEYS[f]
        expected = sorted(k for k, c in counts.items() if c >= min_count and k != missing)
        assert vocab.load_vocabulary(str(tmp_path), field["name"]).tolist() == expected
        assert field["vocab_size"] == len(expected) + 1
        assert field["oov_id"] == field["offset"]
        for s, name in enumerate(("train", "valid", "test")):
            ids = dataset.arrays(name)[0][:, f]
            row_keys = keys[splits == s, f]
            local = np.searchsorted(expected, row_keys) + 1
            known = np.isin(row_keys, expected)
            np.testing.assert_array_equal(ids, np.where(known, field["offset"] + local,
                                                        field["offset"]))
    ids = dataset.arrays("train")[0]
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < dataset.vocab_size


def test_missing_categorical_maps_to_oov(tmp_path):
    row = ["1"] + ["1"] * 13 + ["abc"] * 26
    rows = [row] * 30 + [row[:14] + [""] * 26] * 30
    raw = tmp_path / "train.txt"
    raw.write_text("".join("\t".join(r) + "\n" for r in rows))
    feature_map = prepare("criteo", str(raw), str(tmp_path / "out"), protocol="x4_002")
    dataset = PreparedDataset(str(tmp_path / "out"))
    ids = np.concatenate([dataset.arrays(s)[0] for s in ("train", "valid", "test")])
    oov = np.array([f["oov_id"] for f in feature_map["fields"]])
    labels = np.concatenate([dataset.arrays(s)[1] for s in ("train", "valid", "test")])
    assert labels.sum() == 60
    is_oov = ids == oov
    assert not is_oov[:, :13].any()  # missing integers are 0, a value like any other
    assert is_oov[:, 13:].sum() == 30 * 26  # "" never enters a vocabulary


def test_encode_raw_reproduces_prepared_ids(synthetic_criteo, tmp_path):
    out = str(tmp_path / "data")
    feature_map = prepare("synthetic", synthetic_criteo, out)
    ids, labels = encode_raw(out, synthetic_criteo)
    splits = split.assign_splits(0, len(labels), feature_map["seed"])
    dataset = PreparedDataset(out)
    for s, name in enumerate(("train", "valid", "test")):
        np.testing.assert_array_equal(ids[splits == s], dataset.arrays(name)[0])
        np.testing.assert_array_equal(labels[splits == s], dataset.labels(name))
    # An unlabeled file (Kaggle test.txt: no label column) gets NaN labels.
    unlabeled = tmp_path / "test.txt"
    with open(synthetic_criteo, "rb") as f:
        unlabeled.write_bytes(b"".join(line.split(b"\t", 1)[1] for line in f))
    test_ids, test_labels = encode_raw(out, str(unlabeled))
    np.testing.assert_array_equal(test_ids, ids)
    assert np.isnan(test_labels).all()


def test_prepare_synthetic_records_bayes_and_true_probs(synthetic_criteo, tmp_path):
    from mlctr import metrics
    from mlctr.data import synthetic

    feature_map = prepare("synthetic", synthetic_criteo, str(tmp_path))
    dataset = PreparedDataset(str(tmp_path))
    all_probs = np.load(synthetic.true_prob_path(synthetic_criteo))
    splits = split.assign_splits(0, len(all_probs), feature_map["seed"])
    for s, name in enumerate(("train", "valid", "test")):
        probs = dataset.true_prob(name)
        np.testing.assert_array_equal(probs, all_probs[splits == s])
        labels = dataset.labels(name)
        assert feature_map["bayes"][name]["auc"] == pytest.approx(metrics.auc(labels, probs))
        assert feature_map["bayes"][name]["logloss"] == pytest.approx(
            metrics.logloss(labels, probs))
    with open(os.path.join(tmp_path, "feature_map.json")) as f:
        assert json.load(f) == feature_map


def test_prepare_avazu_real_rows(avazu_files, tmp_path):
    feature_map = prepare("avazu", avazu_files[0], str(tmp_path))
    assert feature_map["num_fields"] == 24 and feature_map["min_count"] == 2
    names = [f["name"] for f in feature_map["fields"]]
    assert names[0] == "hour" and names[-2:] == ["weekday", "weekend"] and "id" not in names
    hour = next(f for f in feature_map["fields"] if f["name"] == "hour")
    assert hour["vocab_size"] <= 25


def test_parse_threads_do_not_change_the_output(synthetic_avazu, tmp_path, monkeypatch):
    prepare("avazu", synthetic_avazu, str(tmp_path / "two"), chunk_bytes=20_000)
    monkeypatch.setattr(encoders, "PARSE_THREADS", 1)
    prepare("avazu", synthetic_avazu, str(tmp_path / "one"), chunk_bytes=50_000)
    two, one = _files(tmp_path / "two"), _files(tmp_path / "one")
    assert sorted(two) == sorted(one) and all(two[name] == one[name] for name in two)


def test_encode_raw_with_line_numbers_keeps_file_lines(synthetic_criteo, tmp_path):
    out = str(tmp_path / "data")
    prepare("criteo", synthetic_criteo, out)
    with open(synthetic_criteo, "rb") as f:
        lines = f.read().splitlines(keepends=True)[:50]
    lines[9] = b"1\t2\n"
    raw = tmp_path / "bad.txt"
    raw.write_bytes(b"".join(lines))
    ids, labels, line_numbers, skipped = encode_raw(out, str(raw), skip_bad_rows=True,
                                                    with_line_numbers=True)
    assert line_numbers.tolist() == [n for n in range(1, 51) if n != 10]
    assert skipped == {"wrong_column_count": 1} and len(ids) == len(labels) == 49
