"""TensorFlow SavedModel through jax2tf, for TF Serving: `savedmodel/`.

Signature `serving_default`: `ids` int32 [None, F] -> `probabilities` float32 [None].
jax2tf's native serialization embeds the serving function's StableHLO in an
XlaCallModule op (TF Serving 2.12 or newer runs it), the weights as its constants.

The raw-string -> id lookup stays outside the graph: mlctr keys a string of up to 8
ASCII bytes by its bytes, and a longer or non-ASCII one by a BLAKE2b hash
(mlctr.data.parsing.values), for which TensorFlow has no op; an in-graph lookup could
only match the numpy preprocessor on some datasets, so the SavedModel takes ids like the
other formats and the export ships the preprocessor's data beside it. Optional
dependency (extra `savedmodel`): tensorflow, imported here only, inside the functions.
"""
from __future__ import annotations

import os

import numpy as np

from mlctr.export.manifest import ExportError

DIR = "savedmodel"
INPUT, OUTPUT = "ids", "probabilities"
MISSING = ("the savedmodel format needs tensorflow: pip install 'mlctr[savedmodel]' "
           "(README.md, dependencies)")


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up notices
    try:
        import tensorflow as tf  # optional dependency (extra savedmodel), ~600 MB
    except ImportError:
        raise ExportError(MISSING) from None
    return tf


def save(served, out_dir: str) -> dict:
    """Converts with jax2tf (symbolic batch) and writes `savedmodel/`."""
    tf = _tensorflow()
    from jax.experimental import jax2tf  # imports tensorflow: only for this format

    converted = jax2tf.convert(served.fn, polymorphic_shapes=[f"(b, {served.num_fields})"],
                               with_gradient=False)
    module = tf.Module()
    module.serve = tf.function(
        lambda ids: {OUTPUT: converted(ids)}, autograph=False,
        input_signature=[tf.TensorSpec([None, served.num_fields], tf.int32, name=INPUT)])
    tf.saved_model.save(module, os.path.join(out_dir, DIR),
                        signatures={"serving_default": module.serve.get_concrete_function()})
    return {"model_file": DIR, "signature": "serving_default",
            "converter": {"tensorflow": tf.__version__}}


def load(export_dir: str):
    """ids int32 [b, F] (numpy) -> probabilities float32 [b], in TensorFlow."""
    tf = _tensorflow()
    signature = tf.saved_model.load(os.path.join(export_dir, DIR)).signatures["serving_default"]
    return lambda ids: signature(ids=tf.constant(np.asarray(ids, np.int32)))[OUTPUT].numpy()
