"""BARS x1 csv datasets and a user's own csv: prepare on rows written in those formats."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlctr.data import DataError, bars_csv, encode_raw, parsing, vocab
from mlctr.data.prepare import prepare
from mlctr.data.reader import PreparedDataset

SIZES = {"train": 240, "valid": 40, "test": 30}


def _write_split_files(directory, columns, label, seed=0, label_texts=("0", "1"),
                       gzip_test=False):
    """Random rows of `columns` in train/valid/test.csv; returns {split: list of dicts}."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    rows = {}
    for split, n in SIZES.items():
        rows[split] = []
        for _ in range(n):
            row = {c: (label_texts[rng.integers(2)] if c == label else
                       f"{c}{rng.integers(6)}" if rng.random() > 0.05 else "")
                   for c in columns}
            rows[split].append(row)
        text = ",".join(columns) + "\n" + "".join(
            ",".join(row[c] for c in columns) + "\n" for row in rows[split])
        path = os.path.join(directory, f"{split}.csv")
        if gzip_test and split == "test":
            with gzip.open(path + ".gz", "wt") as f:
                f.write(text)
        else:
            with open(path, "w") as f:
                f.write(text)
    return rows


def _check_dataset(out, csv_format, rows):
    dataset = PreparedDataset(out, expected_dataset=csv_format.name)
    dataset.verify()
    feature_map = dataset.feature_map
    assert dataset.field_names == list(csv_format.field_names)
    assert {s: dataset.num_examples(s) for s in SIZES} == SIZES
    for f, field in enumerate(feature_map["fields"]):
        name = field["name"]
        train_values = {row[name] for row in rows["train"]} - {""}
        keys = vocab.load_vocabulary(out, name)
        assert sorted(keys.tolist()) == sorted(parsing.string_key(v) for v in train_values)
        for split in SIZES:
            expected = [field["offset"] + (1 + int(np.searchsorted(keys, parsing.string_key(
                row[name]))) if row[name] in train_values else 0) for row in rows[split]]
            assert dataset.arrays(split)[0][:, f].tolist() == expected, (split, name)
    for split in SIZES:
        labels = [int(float(row[csv_format.label])) for row in rows[split]]
        assert dataset.arrays(split)[1].tolist() == labels
    return feature_map


@pytest.mark.parametrize("name", sorted(bars_csv.FORMATS))
def test_bars_x1_dataset_from_its_csv_splits(tmp_path, name):
    csv_format = bars_csv.FORMATS[name]
    # The label first, as in the BARS files; the reader goes by the header.
    columns = [csv_format.label] + list(csv_format.field_names)
    rows = _write_split_files(tmp_path / "raw", columns, csv_format.label,
                              label_texts=("0.0", "1.0") if name == "criteo_x1" else ("0", "1"),
                              gzip_test=name == "avazu_x1")
    feature_map = prepare(name, str(tmp_path / "raw"), str(tmp_path / "out"))
    assert feature_map["protocol"] == "x1" and feature_map["min_count"] == 1
    assert feature_map["source"]["files"]["test"]["gzip"] == (name == "avazu_x1")
    _check_dataset(str(tmp_path / "out"), csv_format, rows)


def test_bars_csv_columns_in_any_order_and_extra_columns(tmp_path):
    csv_format = bars_csv.FORMATS["movielens_x1"]
    columns = ["tag_id", "extra", "user_id", "label", "item_id"]
    rows = _write_split_files(tmp_path / "raw", columns, "label", seed=3)
    prepare("movielens_x1", str(tmp_path / "raw"), str(tmp_path / "out"))
    _check_dataset(str(tmp_path / "out"), csv_format, rows)


def test_bars_csv_own_dataset_with_a_feature_spec(tmp_path):
    spec = {"label": "clicked", "min_count": 2,
            "fields": ["user", {"name": "price", "type": "numeric"}, "item"]}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    rows = _write_split_files(tmp_path / "raw", ["user", "item", "price", "clicked"],
                              "clicked", seed=5)
    feature_map = prepare("csv", str(tmp_path / "raw"), str(tmp_path / "out"),
                          feature_spec=str(spec_path))
    assert [f["kind"] for f in feature_map["fields"]] == ["categorical", "numeric",
                                                         "categorical"]
    dataset = PreparedDataset(str(tmp_path / "out"), expected_dataset="csv")
    counts = {}
    for row in rows["train"]:
        counts[row["user"]] = counts.get(row["user"], 0) + 1
    kept = sorted(parsing.string_key(v) for v, c in counts.items() if c >= 2 and v)
    assert vocab.load_vocabulary(str(tmp_path / "out"), "user").tolist() == kept
    # A file encoded for prediction gets the prepared ids (and NaN labels without a label).
    ids, labels = encode_raw(str(tmp_path / "out"), bars_csv.split_file(tmp_path / "raw",
                                                                       "test"))
    np.testing.assert_array_equal(ids, dataset.arrays("test")[0])
    np.testing.assert_array_equal(labels, dataset.labels("test"))
    unlabeled = tmp_path / "new.csv"
    lines = (tmp_path / "raw" / "test.csv").read_text().splitlines()
    unlabeled.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in lines))
    new_ids, new_labels = encode_raw(str(tmp_path / "out"), str(unlabeled))
    np.testing.assert_array_equal(new_ids, ids)
    assert np.isnan(new_labels).all()


def test_bars_csv_bad_rows_name_file_line_and_column(tmp_path):
    columns = ["label"] + list(bars_csv.FORMATS["movielens_x1"].field_names)
    _write_split_files(tmp_path / "raw", columns, "label")
    valid = tmp_path / "raw" / "valid.csv"
    lines = valid.read_text().splitlines(keepends=True)
    lines[5] = "7," + lines[5].split(",", 1)[1]
    lines[9] = "1,2\n"
    valid.write_text("".join(lines))
    with pytest.raises(DataError) as error:
        prepare("movielens_x1", str(tmp_path / "raw"), str(tmp_path / "out"))
    assert str(error.value) == f"{valid}:6: column 1 (label): label '7' is not 0 or 1"
    assert not (tmp_path / "out").exists()
    feature_map = prepare("movielens_x1", str(tmp_path / "raw"), str(tmp_path / "out"),
                          skip_bad_rows=True)
    assert feature_map["bad_rows"]["by_reason"] == {"bad_label": 1, "wrong_column_count": 1}
    assert feature_map["splits"]["valid"]["num_examples"] == SIZES["valid"] - 2


def test_bars_csv_missing_column_file_or_spec(tmp_path):
    _write_split_files(tmp_path / "raw", ["label", "user_id", "item_id"], "label")
    with pytest.raises(DataError, match=r"train.csv:1: no column 'tag_id' in the header"):
        prepare("movielens_x1", str(tmp_path / "raw"), str(tmp_path / "out"))
    os.remove(tmp_path / "raw" / "test.csv")
    with pytest.raises(DataError, match=r"test.csv: no such file"):
        prepare("movielens_x1", str(tmp_path / "raw"), str(tmp_path / "out"))
    with pytest.raises(DataError, match="spec.json: no such file"):
        prepare("csv", str(tmp_path / "raw"), str(tmp_path / "out"),
                feature_spec=str(tmp_path / "spec.json"))
    with pytest.raises(DataError, match='expected {"label"'):
        prepare("csv", str(tmp_path / "raw"), str(tmp_path / "out"), feature_spec={"x": 1})
    with pytest.raises(ValueError, match="feature_spec"):
        prepare("csv", str(tmp_path / "raw"), str(tmp_path / "out"))


def test_distinct_value_counts_name_the_split_they_cover(tmp_path):
    """vocab_size is fit on train; the two distinct counts say train vs all splits (issue 25)."""
    csv_format = bars_csv.FORMATS["movielens_x1"]
    columns = ["label"] + list(csv_format.field_names)
    rows = _write_split_files(tmp_path / "raw", columns, "label", seed=4)
    unseen = {"label": "1", **{c: f"{c}_valid_only" for c in csv_format.field_names}}
    with open(tmp_path / "raw" / "valid.csv", "a") as f:  # values train never holds
        f.write(",".join(unseen[c] for c in columns) + "\n")
    rows["valid"].append(unseen)
    prepare("movielens_x1", str(tmp_path / "raw"), str(tmp_path / "out"))
    fields = PreparedDataset(str(tmp_path / "out")).feature_map["fields"]
    for field in fields:
        name = field["name"]
        train = {r[name] for r in rows["train"]}
        every = {r[name] for split in rows.values() for r in split}
        assert field["distinct_values_train"] == len(train)
        assert field["distinct_values_all_splits"] == len(every) > len(train)
        assert field["vocab_size"] == len(train - {""}) + 1  # min_count 1: + the OOV id
        assert "num_distinct_values" not in field


def test_protocol_x1_is_accepted_where_the_feature_map_records_it(tmp_path):
    """`--protocol=x1` prepares a BARS x1 set (issue 25); it is refused for a raw format."""
    columns = ["label"] + list(bars_csv.FORMATS["frappe_x1"].field_names)
    _write_split_files(tmp_path / "raw", columns, "label")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-m", "mlctr.data.prepare", "--dataset=frappe_x1",
                           f"--raw={tmp_path / 'raw'}", f"--out={tmp_path / 'out'}",
                           "--protocol=x1"], capture_output=True, text=True, cwd=repo,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert PreparedDataset(str(tmp_path / "out")).feature_map["protocol"] == "x1"
    with pytest.raises(ValueError, match="does not apply to frappe_x1"):
        prepare("frappe_x1", str(tmp_path / "raw"), str(tmp_path / "o2"), protocol="x4_002")
    with pytest.raises(ValueError, match="is that of the csv datasets"):
        prepare("criteo", str(tmp_path / "raw" / "train.csv"), str(tmp_path / "o3"),
                protocol="x1")
