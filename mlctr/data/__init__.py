"""CTR data pipeline: raw Criteo/Avazu/synthetic files -> prepared dataset -> batches.

    from mlctr.data import PreparedDataset, prepare  # prepare: the module
    prepare.prepare("synthetic", "data/raw/synthetic.txt", "data/synthetic", num_rows=500_000)
    dataset = PreparedDataset("data/synthetic")
    for batch in dataset.train_batches(4096, seed=0, epoch=0): ...

Modules: parsing (streaming vectorised parsing), criteo / avazu (raw formats and BARS
x4 preprocessing), vocab (vocabularies), split (8:1:1 split), format (on-disk layout),
prepare (the preprocessing CLI and `encode_raw`), reader (batches), synthetic (the
ground-truth generator), tfds_builders (TFDS `criteo` and `avazu`).
"""

from mlctr.data.errors import DataError
from mlctr.data.reader import PreparedDataset, open_dataset

__all__ = ["DataError", "PreparedDataset", "encode_raw", "open_dataset"]


def __getattr__(name):
    # Imported on first use, so that `python -m mlctr.data.prepare` does not find the
    # module already imported by its package (runpy warns about that).
    if name == "encode_raw":
        from mlctr.data.prepare import encode_raw
        return encode_raw
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
