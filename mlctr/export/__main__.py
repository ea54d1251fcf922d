"""CLI: export a trained run's peer or peer ensemble for serving.

  python -m mlctr.export --workdir=RUN [--peer=NAME | --ensemble] \
      --format=stablehlo|onnx|savedmodel --out=DIR [--overwrite] [--platforms=cpu,cuda]
  python -m mlctr.export --check=DIR [--raw=ROWS]   # verify an export; score raw rows

Prints one line saying what was written. `--check` verifies the manifest, loads the model
in its runtime (jax.export.deserialize, onnxruntime or TensorFlow) and, with `--raw`,
prints the probabilities of the file's rows through the numpy preprocessor. A bad run,
peer, format, output or export directory exits 1 with one line, never a traceback.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from mlctr import predict
from mlctr.data.errors import DataError
from mlctr.export import exporter
from mlctr.export.manifest import ExportError
from mlctr.export.preprocess import Preprocessor
from mlctr.run import checkpoint

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run directory (config.json, best/).")
flags.DEFINE_string("peer", "", "Peer to export (default: the ensemble of all peers).")
flags.DEFINE_bool("ensemble", False, "Export the ensemble (mean of the peers' probabilities).")
flags.DEFINE_string("format", "stablehlo", f"One of {sorted(exporter.FORMATS)}.")
flags.DEFINE_string("out", None, "The export directory to create.")
flags.DEFINE_bool("overwrite", False, "Replace an existing export directory.")
flags.DEFINE_list("platforms", ["cpu"], "stablehlo: platforms to lower for (cpu, cuda, tpu).")
flags.DEFINE_string("check", None, "Verify this export directory instead of exporting.")
flags.DEFINE_string("raw", None, "With --check: raw rows to score (the run's raw format).")

ERRORS = (ExportError, DataError, predict.PredictError, checkpoint.CheckpointError)


def _export() -> str:
    manifest = exporter.export_run(FLAGS.workdir, FLAGS.out, FLAGS.format, peer=FLAGS.peer,
                                   overwrite=FLAGS.overwrite, platforms=tuple(FLAGS.platforms))
    return (f"exported {manifest['scored_with']} of {FLAGS.workdir} as {FLAGS.format} to "
            f"{FLAGS.out} ({len(manifest['files'])} files, sha256 in manifest.json)")


def _check() -> str:
    manifest, model = exporter.load(FLAGS.check)
    message = (f"{FLAGS.check}: {manifest['format']} export of {manifest['scored_with']} "
               f"verified ({len(manifest['files'])} files)")
    if not FLAGS.raw:
        return message
    encoded = Preprocessor.load(FLAGS.check).encode_file(FLAGS.raw)
    probs = model(encoded.ids)
    lines = ["row,label,prob"] + [
        f"{r},{'' if label != label else int(label)},{p:.7f}"
        for r, label, p in zip(encoded.rows, encoded.labels, probs)]
    return "\n".join(lines + [message])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.check:
        for name in ("workdir", "out"):
            if not getattr(FLAGS, name):
                raise app.UsageError(f"--{name} is required (or --check=DIR)")
    if FLAGS.peer and FLAGS.ensemble:
        raise app.UsageError("--peer and --ensemble are exclusive")
    logging.set_verbosity(logging.WARNING)  # no orbax restore chatter around the one line
    try:
        print(_check() if FLAGS.check else _export())
    except ERRORS as e:
        print(f"mlctr.export: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
