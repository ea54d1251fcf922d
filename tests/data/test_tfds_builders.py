"""The TFDS builders `criteo` and `avazu` build from a tiny manual file (no TensorFlow)."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from mlctr.data import tfds_builders  # noqa: E402  (registers the builders)
from mlctr.data.reader import PreparedDataset  # noqa: E402


def test_builders_are_registered_with_configs():
    from tensorflow_datasets.core import registered

    assert registered.imported_builder_cls("criteo") is tfds_builders.Criteo
    assert registered.imported_builder_cls("avazu") is tfds_builders.Avazu
    assert [c.name for c in tfds_builders.Criteo.BUILDER_CONFIGS] == ["x4_001", "x4_002"]


def test_build_criteo_from_manual_dir(tmp_path, synthetic_criteo):
    manual = tmp_path / "manual"
    manual.mkdir()
    with open(synthetic_criteo, "rb") as f:
        (manual / "train.txt").write_bytes(b"".join(f.readlines()[:500]))
    builder = tfds_builders.Criteo(config="x4_002", data_dir=str(tmp_path / "tfds"),
                                   file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    splits = builder.info.splits
    assert [splits[s].num_examples for s in ("train", "validation", "test")] == [400, 50, 50]
    source = builder.as_data_source()
    example = source["validation"][3]
    assert example["ids"].dtype == np.int32 and example["ids"].shape == (39,)
    feature_map = builder.info.metadata["feature_map"]
    assert feature_map["protocol"] == "x4_002"
    # The examples are the prepared dataset's rows, in order.
    prepared = PreparedDataset(str(tmp_path / "tfds" / "downloads" / "mlctr_prepared" / "x4_002"))
    np.testing.assert_array_equal(example["ids"], prepared.arrays("valid")[0][3])


def test_missing_manual_file_is_explained(tmp_path):
    builder = tfds_builders.Avazu(config="x4_001", data_dir=str(tmp_path / "tfds"),
                                  file_format="array_record")
    (tmp_path / "manual").mkdir()
    with pytest.raises(Exception, match="manual dir"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
