"""TFDS builders `criteo` and `avazu` over the same BARS x4 preprocessing.

For TFDS workflows: versioned datasets with train/validation/test splits, built from
the raw Kaggle file the user puts in the manual directory. `_split_generators` runs
`mlctr.data.prepare.prepare` (the same streaming preprocessing, vocabularies and split
as the CLI) into `<download_dir>/mlctr_prepared/<config>` and the examples are read
back from that fast format; the feature map (vocabulary sizes and offsets) is stored in
the dataset metadata. Each example is {"ids": int32 [F] global ids, "label": 0/1}.

    import tensorflow_datasets as tfds
    from mlctr.data import tfds_builders  # registers `criteo` and `avazu`
    builder = tfds_builders.Criteo(config="x4_001", data_dir="~/tensorflow_datasets",
                                   file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="~/criteo"))  # holding train.txt (or train.txt.gz)
    source = builder.as_data_source()  # array_record: no TensorFlow needed

TensorFlow itself is not a dependency: use file_format="array_record" and
`as_data_source()`; `as_dataset()` (tf.data) needs TensorFlow installed. For training,
mlctr reads the prepared directory directly (`mlctr.data.reader`), which is faster.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mlctr.data import avazu, criteo, prepare as prepare_lib
from mlctr.data.reader import PreparedDataset

_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
_BLOCK_ROWS = 1 << 16


@dataclasses.dataclass
class CtrConfig(tfds.core.BuilderConfig):
    """A BARS x4 variant: `protocol` sets min_count; `seed` the 8:1:1 split."""
    protocol: str = "x4_001"
    seed: int = 2018


_CONFIGS = [
    CtrConfig(name="x4_001", protocol="x4_001",
              description="BARS x4_001: min_count 10 (Criteo) / 2 (Avazu), split seed 2018."),
    CtrConfig(name="x4_002", protocol="x4_002",
              description="BARS x4_002: min_count 2 (Criteo) / 1 (Avazu), split seed 2018."),
]


class _CtrBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared logic; subclasses set the raw format and the expected manual files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "BARS x4 preprocessing by mlctr.data.prepare."}
    BUILDER_CONFIGS = _CONFIGS
    _RAW_FORMAT = None  # the mlctr.data.criteo or mlctr.data.avazu module
    _MANUAL_FILES: tuple[str, ...] = ()

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS's default locates the module through the `importlib_resources` backport,
        # which is not installed (nor needed): this file is the code path.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        num_fields = len(self._RAW_FORMAT.FIELD_NAMES)
        return self.dataset_info_from_configs(
            description=(f"{self._RAW_FORMAT.NAME} with BARS x4 preprocessing: each example "
                         f"holds {num_fields} global feature ids (field offsets added, "
                         "see metadata['feature_map']) and a 0/1 click label."),
            features=tfds.features.FeaturesDict({
                "ids": tfds.features.Tensor(shape=(num_fields,), dtype=np.int32),
                "label": tfds.features.ClassLabel(num_classes=2),
            }),
            supervised_keys=("ids", "label"),
            metadata=tfds.core.MetadataDict(),
        )

    def _raw_path(self, manual_dir) -> str:
        for name in self._MANUAL_FILES:
            path = os.path.join(os.fspath(manual_dir), name)
            if os.path.exists(path):
                return path
        raise FileNotFoundError(
            f"none of {list(self._MANUAL_FILES)} in the manual dir {manual_dir}; "
            + self.MANUAL_DOWNLOAD_INSTRUCTIONS)

    def _split_generators(self, dl_manager):
        raw = self._raw_path(dl_manager.manual_dir)
        prepared = os.path.join(os.fspath(dl_manager.download_dir), "mlctr_prepared",
                                self.builder_config.name)
        feature_map = prepare_lib.prepare(
            self._RAW_FORMAT.NAME, raw, prepared, protocol=self.builder_config.protocol,
            seed=self.builder_config.seed, overwrite=True)  # TFDS owns this directory
        self.info.metadata["feature_map"] = feature_map
        return {name: self._generate_examples(prepared, split)
                for name, split in _SPLITS.items()}

    def _generate_examples(self, prepared: str, split: str):
        ids, labels = PreparedDataset(prepared).arrays(split)
        for start in range(0, len(labels), _BLOCK_ROWS):
            block_ids = np.asarray(ids[start:start + _BLOCK_ROWS])
            block_labels = np.asarray(labels[start:start + _BLOCK_ROWS])
            for i in range(len(block_labels)):
                yield start + i, {"ids": block_ids[i], "label": int(block_labels[i])}


class Criteo(_CtrBuilder):
    """Criteo Kaggle Display Advertising Challenge, BARS Criteo_x4 preprocessing."""

    _RAW_FORMAT = criteo
    _MANUAL_FILES = ("train.txt", "train.txt.gz")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the Criteo Kaggle train.txt (45,840,617 rows, ~11 GB; gzip also works, as "
        "train.txt.gz) in the manual dir, e.g. from the dac.tar.gz of the Criteo 2014 "
        "Display Advertising Challenge.")


class Avazu(_CtrBuilder):
    """Avazu Kaggle Click-Through Rate Prediction, BARS Avazu_x4 preprocessing."""

    _RAW_FORMAT = avazu
    _MANUAL_FILES = ("train.csv", "train.csv.gz", "train.gz", "train")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the Avazu Kaggle train file (40,428,967 rows, ~6 GB; Kaggle ships it as "
        "train.gz, which works as is) in the manual dir as train.csv, train.csv.gz or "
        "train.gz.")
