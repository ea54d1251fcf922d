"""Hashed vocabularies: the stable hash, bucket ranges, max_rows, and a hash-mode prepare."""

import hashlib
import json
import os

import numpy as np
import pytest

from mlctr.data import criteo, encode_raw, hashing, parsing, vocab
from mlctr.data.prepare import encoders, prepare
from mlctr.data.reader import PreparedDataset

M64 = (1 << 64) - 1


def reference_key(token: bytes) -> int:
    """A token's key, the obvious way (mlctr.data.parsing.values), as an unsigned int."""
    if len(token) <= 8 and all(b < 0x80 for b in token):
        return int.from_bytes(token, "little")
    return int.from_bytes(hashlib.blake2b(token, digest_size=8).digest(), "little") | (1 << 63)


def reference_bucket(key: int, field: int, buckets: int) -> int:
    """splitmix64 of (key, field) in Python integers: the local id of a present value."""
    x = ((key & M64) + (field + 1) * 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return 1 + x % buckets


def _signed(key: int) -> int:
    return key - (1 << 64) if key >= (1 << 63) else key


TOKENS = [b"68fd1e64", b"05db9164", b"a", b"x" * 20, "caf\u00e9".encode()]


def test_hash_matches_an_independent_computation():
    for field in (0, 13, 38):
        keys = np.array([_signed(reference_key(t)) for t in TOKENS], np.int64)
        ids = hashing.bucket_ids(keys, field, 1000, missing_key=0)
        assert ids.tolist() == [reference_bucket(reference_key(t), field, 1000) for t in TOKENS]
    # The same key in another field lands elsewhere (the field is part of the hash).
    key = np.array([parsing.string_key("68fd1e64")], np.int64)
    assert len({int(hashing.hash_keys(key, f)[0]) for f in range(39)}) == 39


def test_hash_values_are_pinned():
    # Fixed forever by HASH_VERSION 1: a change here changes every hashed dataset's ids.
    keys = np.array([parsing.string_key("68fd1e64"), parsing.string_key("x" * 20)], np.int64)
    assert hashing.hash_keys(keys, 0).tolist() == [0x79621f72648ddaf5, 0x94181264179bbc9f]


def test_bucket_range_and_missing_id():
    rng = np.random.default_rng(0)
    keys = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 200_000, np.int64)
    keys[::7] = 0
    for buckets in (1, 7, 1 << 20):
        ids = hashing.bucket_ids(keys, 5, buckets, missing_key=0)
        assert ids.dtype == np.int32
        assert (ids[::7] == 0).all()
        present = np.delete(ids, np.s_[::7])
        assert present.min() >= 1 and present.max() <= buckets
    ids = hashing.bucket_ids(keys, 5, 16, missing_key=0)
    counts = np.bincount(ids[ids > 0], minlength=17)[1:]
    assert counts.min() > 0.9 * counts.mean()  # spread evenly
    assert (hashing.bucket_ids(keys, 5, 16, missing_key=None) > 0).all()


def test_field_bucket_counts_overrides_cap_and_errors():
    names = ["I1", "C1", "C2"]
    assert hashing.field_bucket_counts(names, hash_buckets=100,
                                       field_buckets="I1=8") == [8, 100, 100]
    assert hashing.field_bucket_counts(names, hash_buckets=100, field_buckets={"C2": 500},
                                       max_rows=51) == [50, 50, 50]
    with pytest.raises(ValueError, match="unknown field 'C9'"):
        hashing.field_bucket_counts(names, field_buckets="C9=4")
    with pytest.raises(ValueError, match="C1='x' is not an integer"):
        hashing.field_bucket_counts(names, field_buckets="C1=x")
    with pytest.raises(ValueError, match="max_rows"):
        hashing.field_bucket_counts(names, max_rows=1)


def _criteo_rows(count: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        ints = [str(int(v)) if v >= 0 else "" for v in rng.integers(-1, 50, 13)]
        strs = [f"{int(v):08x}" if v else "" for v in rng.integers(0, 300, 26)]
        strs[0] = "a_long_categorical_value" if i % 5 == 0 else strs[0]
        rows.append([str(int(rng.random() < 0.3))] + ints + strs)
    return rows


def _write(path, rows):
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    return str(path)


def test_hash_mode_prepare_gives_the_hashed_ids(tmp_path):
    rows = _criteo_rows(400)
    raw = _write(tmp_path / "train.txt", rows)
    out = str(tmp_path / "hashed")
    feature_map = prepare("criteo", raw, out, vocab_mode="hash", hash_buckets=1000,
                          field_buckets="I1=16")
    assert feature_map["vocab"]["mode"] == "hash" and feature_map["min_count"] is None
    assert not os.path.exists(os.path.join(out, "vocab"))
    fields = feature_map["fields"]
    assert [f["vocab_size"] for f in fields[:2]] == [17, 1001]
    dataset = PreparedDataset(out, expected_dataset="criteo")
    dataset.verify()
    ids, labels = encode_raw(out, raw)  # file order
    # Row by row, field by field, from the text: BARS bucketing, then the reference hash.
    for r in (0, 1, 5, 399):
        for f, field in enumerate(fields):
            token = rows[r][1 + f]
            if f < 13:  # BARS bucketing; a missing integer is 0, a value like any other
                key = int(criteo.bucketize(np.array([int(token or 0)]))[0])
                expected = reference_bucket(key, f, field["hash_buckets"])
            else:  # a missing string is the reserved id 0
                expected = (reference_bucket(reference_key(token.encode()), f,
                                             field["hash_buckets"]) if token else 0)
            assert ids[r, f] == field["offset"] + expected, (r, field["name"])
    train = np.concatenate([dataset.arrays(s)[0] for s in ("train", "valid", "test")])
    assert sorted(map(tuple, train)) == sorted(map(tuple, ids))
    assert labels.sum() == sum(int(r[0]) for r in rows)


def test_hash_mode_is_chunking_and_thread_independent(tmp_path, monkeypatch):
    raw = _write(tmp_path / "train.txt", _criteo_rows(600, seed=1))
    prepare("criteo", raw, str(tmp_path / "a"), vocab_mode="hash", hash_buckets=64)
    monkeypatch.setattr(encoders, "PARSE_THREADS", 1)
    prepare("criteo", raw, str(tmp_path / "b"), vocab_mode="hash", hash_buckets=64,
            chunk_bytes=5000)
    for name in ("train_ids.npy", "valid_ids.npy", "test_label.npy", "feature_map.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_fit_mode_output_is_unchanged_by_the_vocab_options(tmp_path):
    raw = _write(tmp_path / "train.txt", _criteo_rows(500, seed=2))
    prepare("criteo", raw, str(tmp_path / "default"), protocol="x4_002")
    prepare("criteo", raw, str(tmp_path / "fit"), protocol="x4_002", vocab_mode="fit",
            max_rows=0)
    # A bucket count does not apply to a fitted vocabulary: refused, not ignored (issue 26).
    with pytest.raises(ValueError, match="hash_buckets=7 is for vocab_mode='hash'"):
        prepare("criteo", raw, str(tmp_path / "fit7"), protocol="x4_002", vocab_mode="fit",
                hash_buckets=7)
    for root in ("default", "fit"):
        with open(tmp_path / root / "feature_map.json") as f:
            assert "vocab" not in json.load(f)
    names = sorted(os.listdir(tmp_path / "default"))
    assert names == sorted(os.listdir(tmp_path / "fit")) and "vocab" in names
    for name in names + [os.path.join("vocab", "C1.npy")]:
        if name not in (".lock", "vocab"):
            assert (tmp_path / "default" / name).read_bytes() == \
                (tmp_path / "fit" / name).read_bytes(), name


def test_max_rows_caps_fitted_vocabularies_by_frequency():
    keys = np.array([50, 10, 30, 20, 40], np.int64)
    counts = np.array([5, 9, 9, 1, 7])
    kept, local = vocab.fit_vocabulary(keys, counts, min_count=1, missing_key=None, max_rows=4)
    assert kept.tolist() == [10, 30, 40]  # the 3 most frequent, in key order
    assert local.tolist() == [0, 1, 2, 0, 3]
    full, _ = vocab.fit_vocabulary(keys, counts, min_count=1, missing_key=None)
    assert full.tolist() == [10, 20, 30, 40, 50]


def test_max_rows_in_prepare(tmp_path):
    raw = _write(tmp_path / "train.txt", _criteo_rows(500, seed=3))
    fitted = prepare("criteo", raw, str(tmp_path / "fit"), protocol="x4_002", max_rows=5)
    assert max(f["vocab_size"] for f in fitted["fields"]) == 5
    assert fitted["vocab"] == {"mode": "fit", "max_rows": 5}
    hashed = prepare("criteo", raw, str(tmp_path / "hash"), vocab_mode="hash", max_rows=9)
    assert {f["vocab_size"] for f in hashed["fields"]} == {9}
    PreparedDataset(str(tmp_path / "fit"))
    PreparedDataset(str(tmp_path / "hash"))


def test_bad_vocab_arguments(tmp_path):
    raw = _write(tmp_path / "train.txt", _criteo_rows(20))
    with pytest.raises(ValueError, match="unknown vocab_mode 'hashed'"):
        prepare("criteo", raw, str(tmp_path / "o"), vocab_mode="hashed")
    with pytest.raises(ValueError, match="field_buckets is for vocab_mode='hash'"):
        prepare("criteo", raw, str(tmp_path / "o"), field_buckets="C1=3")
    with pytest.raises(ValueError, match="hash_buckets must be"):
        prepare("criteo", raw, str(tmp_path / "o"), vocab_mode="hash", hash_buckets=0)
    with pytest.raises(ValueError, match="int32"):
        prepare("criteo", raw, str(tmp_path / "o"), vocab_mode="hash", hash_buckets=1 << 27)
    assert not os.path.exists(tmp_path / "o" / "feature_map.json")


@pytest.mark.parametrize("key, value, message", [
    ("mode", "hashed", "config.vocab.mode: must be one of"),
    ("hash_buckets", 0, "config.vocab.hash_buckets: must be an integer >= 1"),
    ("max_rows", 1, "config.vocab.max_rows: must be 0"),
    ("field_buckets", "I1=4", "config.vocab.field_buckets: is for vocab.mode='hash'"),
])
def test_vocab_config_keys_are_validated(key, value, message):
    from mlctr.configs import default, validate

    config = default.get_config()
    validate.validate(config)
    assert config.vocab.mode == "fit" and config.vocab.max_rows == 0
    config.vocab[key] = value
    with pytest.raises(ValueError, match=message):
        validate.validate(config)
    hashed = default.get_config()
    hashed.vocab.mode, hashed.vocab.field_buckets = "hash", "I1=4"
    validate.validate(hashed)


def test_hash_mode_on_real_criteo_rows(criteo_files, criteo_reference, tmp_path):
    raw = criteo_files[0]
    out = str(tmp_path / "real")
    feature_map = prepare("criteo", raw, out, vocab_mode="hash", hash_buckets=1 << 16)
    PreparedDataset(out).verify()
    ids, _ = encode_raw(out, raw)
    keys, _ = criteo_reference(raw)
    for f, field in enumerate(feature_map["fields"]):
        expected = [0 if (f >= 13 and key == 0) else
                    reference_bucket(int(key), f, field["hash_buckets"])
                    for key in keys[:200, f].tolist()]
        assert (ids[:200, f] - field["offset"]).tolist() == expected, field["name"]


def test_hash_mode_on_a_bars_csv_dataset(tmp_path):
    from test_bars_csv import _write_split_files

    from mlctr.data import bars_csv

    csv_format = bars_csv.FORMATS["frappe_x1"]
    columns = [csv_format.label] + csv_format.FIELD_NAMES
    rows = _write_split_files(tmp_path / "raw", columns, csv_format.label)
    out = str(tmp_path / "data")
    feature_map = prepare("frappe_x1", str(tmp_path / "raw"), out, vocab_mode="hash",
                          hash_buckets=97)
    assert feature_map["vocab"]["mode"] == "hash"
    dataset = PreparedDataset(out, expected_dataset="frappe_x1")
    ids = dataset.arrays("valid")[0]
    for r, row in enumerate(rows["valid"][:20]):
        for f, name in enumerate(csv_format.FIELD_NAMES):
            token = row[name].encode()
            local = reference_bucket(reference_key(token), f, 97) if token else 0
            assert ids[r, f] == feature_map["fields"][f]["offset"] + local
    test_ids, _ = encode_raw(out, os.path.join(str(tmp_path / "raw"), "test.csv"))
    np.testing.assert_array_equal(test_ids, dataset.arrays("test")[0])
