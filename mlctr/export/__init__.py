"""Export a trained run's peer (or peer ensemble) for serving outside mlctr.

  python -m mlctr.export --workdir=RUN [--peer=NAME | --ensemble] \
      --format=stablehlo|onnx|savedmodel --out=DIR

The export directory is self-contained: the model (ids int32 [batch, fields] ->
click probabilities float32 [batch], batch-polymorphic), the data the raw-row
preprocessing needs (`preprocess/`: the dataset's feature map and fitted vocabularies)
and `manifest.json` (fields, input contract, dataset fingerprint, vocabulary mode,
versions, the sha256 of every file). Modules: `manifest` (write and verify),
`preprocess` (raw rows -> ids with numpy only: this package's __init__ imports nothing,
so `mlctr.export.preprocess` loads without JAX), `serving` (the exported function of a
run), `stablehlo`, `onnx_format`, `savedmodel` (one per format), `exporter` (the
export and the loading back of any format) and `__main__` (the CLI). docs/serving.md.
"""
