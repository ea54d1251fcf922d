"""Export a run to a directory in one format, and load any export back.

`export_run` writes into `<out>.partial/` and renames it to `out` once the manifest is
written, so `out` is either a whole export or absent; `load` verifies the manifest
(sha256 of every file) before it reads anything.
"""
from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata

import jax
import numpy as np

from mlctr.data.reader import PreparedDataset
from mlctr.export import manifest as manifest_lib
from mlctr.export import onnx_format, preprocess, savedmodel, serving, stablehlo
from mlctr.export.manifest import ExportError
from mlctr.run import inputs

FORMATS = {"stablehlo": stablehlo, "onnx": onnx_format, "savedmodel": savedmodel}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unsupported format {fmt!r}; expected one of {sorted(FORMATS)}")


def _check_out(out: str, overwrite: bool) -> None:
    """Refuses an output that exists (unless `overwrite`) or cannot be written."""
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.exists(out) and not (overwrite and os.path.isdir(out)):
        raise ExportError(f"--out={out} exists; choose a new directory or pass --overwrite")
    if not os.path.isdir(parent):
        raise ExportError(f"--out={out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"--out={out}: directory {parent} is not writable")


def _describe(served: serving.Served, workdir: str, fmt: str) -> dict:
    """What the manifest says beside the files' sha256."""
    dataset = PreparedDataset(served.data_dir)
    feature_map = dataset.feature_map
    vocab = dict(feature_map.get("vocab") or {"mode": "fit"})
    config_vocab = served.config.get("vocab") or {}
    vocab.update(qr_collisions=int(config_vocab.get("qr_collisions", 0)),
                 qr_combiner=config_vocab.get("qr_combiner", "product"))
    return {
        "format": fmt, "scored_with": served.scored_with, "peers": served.peers,
        "input": {"name": "ids", "dtype": "int32", "shape": ["batch", served.num_fields],
                  "range": [0, served.vocab_size],
                  "meaning": "dataset ids of preprocess/ (mlctr.export.preprocess)"},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch"],
                   "meaning": "click probability" + (" (mean over the peers)"
                                                     if len(served.peers) > 1 else "")},
        "fields": [f["name"] for f in feature_map["fields"]],
        "dataset": {"name": feature_map.get("dataset"), "raw_format": feature_map.get("raw_format"),
                    "fingerprint": inputs.dataset_fingerprint(dataset)},
        "vocab": vocab, "run": os.path.abspath(workdir),
        "versions": {"mlctr": metadata.version("mlctr"), "jax": jax.__version__,
                     "jaxlib": metadata.version("jaxlib"), "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def export_run(workdir: str, out: str, fmt: str, *, peer: str = "", overwrite: bool = False,
               platforms: tuple[str, ...] = ("cpu",)) -> dict:
    """Exports a run's peer (or its ensemble, `peer=''`) to `out`; returns the manifest.

    Raises:
      ExportError: unsupported format, unknown peer, unusable output, missing converter.
      predict.PredictError, checkpoint.CheckpointError, DataError: the run cannot be
        loaded (see `serving.load`).
    """
    check_format(fmt)
    _check_out(out, overwrite)
    served = serving.load(workdir, peer)
    partial = out.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        module = FORMATS[fmt]
        extra = (module.save(served, partial, platforms=platforms) if module is stablehlo
                 else module.save(served, partial))
        preprocess.copy_dataset_files(served.data_dir, partial)
        written = manifest_lib.write(partial, {**_describe(served, workdir, fmt), **extra})
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(partial, out)
    return written


def load(export_dir: str):
    """(manifest, predict) of a verified export: predict(ids int32 [b, F]) -> float32 [b].

    Raises:
      ExportError: not an export, a file differs from its sha256, unknown format, or the
        format's runtime is not installed.
    """
    manifest = manifest_lib.verify(export_dir)
    fmt = manifest.get("format")
    if fmt not in FORMATS:
        raise ExportError(f"{export_dir}: format {fmt!r} in {manifest_lib.MANIFEST} is not one "
                          f"this mlctr reads ({sorted(FORMATS)})")
    return manifest, FORMATS[fmt].load(export_dir)
