"""CTR data pipeline: raw Criteo/Avazu/synthetic/BARS csv files -> prepared dataset -> batches.

    from mlctr.data import PreparedDataset
    from mlctr.data.prepare import prepare
    prepare("synthetic", "data/raw/synthetic.txt", "data/synthetic", num_rows=500_000)
    dataset = PreparedDataset("data/synthetic")
    for batch in dataset.train_batches(4096, seed=0, epoch=0): ...

Modules: parsing (streaming vectorised parsing: stream, lines, values, rows), criteo /
avazu (raw formats and BARS x4 preprocessing), criteo_1tb (the Criteo 1TB day files and
the MLPerf split), bars_csv (BARS x1 csv datasets and a user's csv), vocab (fitted
vocabularies), hashing (hashed vocabularies), hashed_stream (hashed batches straight
from raw files), split (8:1:1 split), layout (on-disk layout and checksums), prepare (the
preprocessing package and its CLI; `encode_raw`), reader (validation on open, batches),
errors (DataError, DatasetError), synthetic (the ground-truth generator), tfds_builders
(TFDS `criteo` and `avazu`).
"""

from mlctr.data.errors import DataError, DatasetError
from mlctr.data.prepare.encode import encode_raw
from mlctr.data.reader import PreparedDataset, open_dataset

__all__ = ["DataError", "DatasetError", "PreparedDataset", "encode_raw", "open_dataset"]

