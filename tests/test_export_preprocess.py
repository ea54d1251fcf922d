"""mlctr.export.preprocess: raw rows -> exactly the ids `encode_raw` (prepare, predict)
gives, for fitted and hashed vocabularies, Criteo, Avazu and csv rows, the shared real
rows (/work/shared/data) and synthetic ones, with numpy only (no JAX imported)."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from mlctr.data.errors import DataError
from mlctr.data.prepare import prepare
from mlctr.data.prepare.encode import encode_raw
from mlctr.export import manifest
from mlctr.export.preprocess import Preprocessor, copy_dataset_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = "/work/shared/data"


def _raw_file(data_dir):
    raw_dir = os.path.join(os.path.dirname(data_dir), "raw")
    return sorted(glob.glob(os.path.join(raw_dir, "*.txt")) + glob.glob(os.path.join(raw_dir, "*.csv")))[0]


def _assert_same(pre, data_dir, raw, skip_bad_rows=False):
    ids, labels, rows, skipped = encode_raw(data_dir, raw, skip_bad_rows=skip_bad_rows,
                                            with_line_numbers=True)
    got = pre.encode_file(raw, skip_bad_rows=skip_bad_rows)
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.rows, rows)
    assert got.skipped == skipped
    return got


def test_preprocess_imports_no_jax():
    code = ("import sys, mlctr.export.preprocess, mlctr.export.manifest; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'jax', 'jaxlib', 'flax', 'optax', 'orbax', 'tensorflow'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_preprocess_synthetic_criteo_rows_from_an_export_directory(tiny_data_dir, tmp_path):
    export_dir = str(tmp_path / "ex")
    copy_dataset_files(tiny_data_dir, export_dir)
    manifest.write(export_dir, {"format": "stablehlo"})
    pre = Preprocessor.load(export_dir)
    raw = _raw_file(tiny_data_dir)
    whole = _assert_same(pre, tiny_data_dir, raw)
    lines = open(raw).read().splitlines()[100:164]
    batch = pre.encode_lines(lines)
    np.testing.assert_array_equal(batch.ids, whole.ids[100:164])
    np.testing.assert_array_equal(batch.rows, np.arange(1, 65))
    unlabeled = pre.encode_lines([line.split("\t", 1)[1] for line in lines])  # 39 columns
    np.testing.assert_array_equal(unlabeled.ids, whole.ids[100:164])
    assert np.isnan(unlabeled.labels).all()
    bad = lines[:3] + ["1\tx" + lines[3].split("\t", 1)[1]]
    with pytest.raises(DataError, match=r"<rows>:4: column 2 \(I1\)"):
        pre.encode_lines(bad)
    assert pre.encode_lines(bad, skip_bad_rows=True).ids.shape == (3, 39)


def test_preprocess_hashed_and_avazu_format(tmp_path):
    for fmt, mode in (("criteo", "hash"), ("avazu", "fit"), ("avazu", "hash")):
        out = str(tmp_path / f"{fmt}_{mode}" / "prepared")
        raw = str(tmp_path / f"{fmt}_{mode}" / "raw" / ("rows.csv" if fmt == "avazu" else "rows.txt"))
        prepare("synthetic", raw, out, num_rows=300, seed=5, synthetic_format=fmt,
                vocab_mode=mode, **({"hash_buckets": 1000} if mode == "hash" else {}))
        pre = Preprocessor(out)
        whole = _assert_same(pre, out, raw)
        lines = open(raw).read().splitlines()
        start = 1 if fmt == "avazu" else 0  # the Avazu header
        for batch in (pre.encode_lines(lines[start:start + 20]),
                      pre.encode_lines(lines[:start] + lines[start:start + 20])):
            np.testing.assert_array_equal(batch.ids, whole.ids[:20], err_msg=f"{fmt} {mode}")


def test_preprocess_csv_dataset(tmp_path):
    rng = np.random.default_rng(0)
    raw_dir = tmp_path / "csv"
    raw_dir.mkdir()
    for split, n in (("train", 200), ("valid", 30), ("test", 30)):
        rows = ["label,user,item,city"] + [
            f"{rng.integers(2)},u{rng.integers(40)},item_{rng.integers(60)}_long_name,"
            f"{rng.choice(['Zürich', 'Paris', ''])}" for _ in range(n)]
        (raw_dir / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = {"label": "label", "fields": ["user", "item", "city"]}
    out = str(tmp_path / "prepared")
    prepare("csv", str(raw_dir), out, feature_spec=spec)
    pre = Preprocessor(out)
    whole = _assert_same(pre, out, str(raw_dir / "test.csv"))
    lines = (raw_dir / "test.csv").read_text(encoding="utf-8").splitlines()
    np.testing.assert_array_equal(pre.encode_lines(lines[1:]).ids, whole.ids)
    fields_only = [line.split(",", 1)[1] for line in lines[1:]]
    np.testing.assert_array_equal(pre.encode_lines(fields_only).ids, whole.ids)


@pytest.mark.parametrize("fmt", ["criteo", "avazu"])
def test_preprocess_shared_real_rows(fmt, tmp_path):
    files = sorted(glob.glob(os.path.join(SHARED, fmt, "*")))
    if not files:
        pytest.skip(f"{SHARED}/{fmt} absent: the shared real {fmt} rows are not on this machine")
    biggest = max(files, key=os.path.getsize)
    for mode in ("fit", "hash"):
        out = str(tmp_path / mode)
        prepare(fmt, biggest, out, protocol="x4_002", vocab_mode=mode, skip_bad_rows=True)
        pre = Preprocessor(out)
        for raw in files:
            got = _assert_same(pre, out, raw, skip_bad_rows=True)
            if fmt == "avazu" or len(got.ids) < 2:
                continue
            text = open(raw).read().splitlines()
            picked = [text[r - 1] for r in got.rows[:50]]
            np.testing.assert_array_equal(pre.encode_lines(picked).ids, got.ids[:50])
