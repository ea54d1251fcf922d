"""ONNX through jax2onnx, checked in onnxruntime: `model.onnx`.

Measured on the registry (tests/test_export.py, every model and the ensemble): jax2onnx
converts all of them, and onnxruntime's probabilities equal `mlctr.predict`'s within
1e-7 on the tiny run. jax2onnx is maintained, converts the jaxpr directly (no
TensorFlow), and keeps the batch dimension symbolic ("batch"). The input is `ids`
int32 [batch, F], the output `probabilities` float32 [batch]; the weights are
initializers inside the file. Optional dependencies (extra `onnx`): jax2onnx for the
export, onnxruntime to check and run it. They are imported here only, inside the
functions, so that the other formats work without them.
"""
from __future__ import annotations

import os
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

from mlctr.export.manifest import ExportError

FILE = "model.onnx"
INPUT, OUTPUT = "ids", "probabilities"
MISSING = ("the onnx format needs jax2onnx and onnxruntime: pip install 'mlctr[onnx]' "
           "(README.md, dependencies)")


def _session(model_bytes: bytes):
    try:
        import onnxruntime  # optional dependency (extra onnx)
    except ImportError:
        raise ExportError(MISSING) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # no warnings on stderr for a served model
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def save(served, out_dir: str) -> dict:
    """Converts, checks the model loads in onnxruntime and writes `model.onnx`."""
    try:
        import jax2onnx  # optional dependency (extra onnx)
        import onnx  # optional dependency (extra onnx)
    except ImportError:
        raise ExportError(MISSING) from None
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"batch, {served.num_fields}"),
                                jnp.int32)
    model = jax2onnx.to_onnx(served.fn, [spec], model_name="mlctr_" + served.scored_with,
                             input_names=[INPUT], output_names=[OUTPUT])
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    _session(data)  # onnxruntime accepts it
    with open(os.path.join(out_dir, FILE), "wb") as f:
        f.write(data)
    return {"model_file": FILE, "opset": int(model.opset_import[0].version),
            "converter": {name: metadata.version(name)
                          for name in ("jax2onnx", "onnx", "onnxruntime")}}


def load(export_dir: str):
    """ids int32 [b, F] (numpy) -> probabilities float32 [b], in onnxruntime."""
    with open(os.path.join(export_dir, FILE), "rb") as f:
        session = _session(f.read())
    return lambda ids: session.run([OUTPUT], {INPUT: np.asarray(ids, np.int32)})[0]
