"""Serving benchmark: an exported peer and the exported peer ensemble, onnxruntime vs JAX jit.

  python -m experiments.benchmarks.serving --workdir=runs/default/finetune_mutual \
      [--peer=deepfm] [--batch_sizes=1,64,1024] [--seconds=3]

Exports the run's `--peer` and its ensemble (all peers, the default run's 4) as StableHLO
and as ONNX (mlctr.export), loads each back as a server would (the StableHLO through
jax.export.deserialize under jax.jit, the ONNX in an onnxruntime CPU session), and
times one call per batch of ids (int32 [batch, F], rows of the run's test split) at each
batch size. The two runtimes are called alternately (jax, ort, jax, ort, ...), so load
from other processes on a shared machine slows both alike: compare them within one run.
Also timed: the numpy preprocessor turning the same rows' raw text into ids
(`Preprocessor.encode_lines`), the cost a raw-rows-in server adds.

Per (model, runtime, batch): p50 and p99 latency of a call (ms) and throughput (rows/s =
batch / mean latency). The last line printed is one JSON object with all of them, the
machine's core count and its load average. Measurements: docs/serving.md.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from mlctr import xla_cpu
from mlctr.data import layout
from mlctr.export import exporter, serving
from mlctr.export.preprocess import Preprocessor

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/default/finetune_mutual", "A finished run directory.")
flags.DEFINE_string("peer", "deepfm", "The single peer to time beside the ensemble.")
flags.DEFINE_list("batch_sizes", ["1", "64", "1024"], "Batch sizes to time.")
flags.DEFINE_float("seconds", 3.0, "Time budget per (model, batch size), both runtimes together.")
flags.DEFINE_integer("min_calls", 20, "Calls per runtime at least, whatever --seconds says.")


def _stats(latencies: list[float], batch: int) -> dict:
    seconds = np.asarray(latencies)
    return {"p50_ms": round(float(np.percentile(seconds, 50)) * 1e3, 4),
            "p99_ms": round(float(np.percentile(seconds, 99)) * 1e3, 4),
            "rows_per_s": round(batch / float(seconds.mean()), 1), "calls": len(latencies)}


def _time_alternately(runners: dict, inputs: list, budget: float, min_calls: int) -> dict:
    """{name: latencies} of runners called in turn on inputs[i % len], after a warm-up."""
    for run in runners.values():
        run(inputs[0])
    latencies = {name: [] for name in runners}
    start, i = time.perf_counter(), 0
    while time.perf_counter() - start < budget or i < min_calls:
        for name, run in runners.items():
            t = time.perf_counter()
            run(inputs[i % len(inputs)])
            latencies[name].append(time.perf_counter() - t)
        i += 1
    return latencies


def _raw_lines(data_dir: str, count: int) -> list[str]:
    """Up to `count` raw rows of the run's dataset (a synthetic dataset's generated raw
    file, in `raw/` inside or beside the dataset), for the preprocessor; [] if none."""
    for raw_dir in (os.path.join(data_dir, "raw"),
                    os.path.join(os.path.dirname(os.path.abspath(data_dir)), "raw")):
        names = sorted(n for n in os.listdir(raw_dir) if n.endswith((".txt", ".csv"))) \
            if os.path.isdir(raw_dir) else []
        if names:
            with open(os.path.join(raw_dir, names[0])) as f:
                lines = [line for _, line in zip(range(count + 1), f)]
            return lines[1:] if names[0].endswith(".csv") else lines[:count]
    return []


def _benchmark_model(out_dir: str, ids: np.ndarray, lines: list[str]) -> dict:
    models = {fmt: exporter.load(os.path.join(out_dir, fmt))[1] for fmt in ("stablehlo", "onnx")}
    runners = {"jax_jit": models["stablehlo"], "onnxruntime": models["onnx"]}
    pre = Preprocessor.load(os.path.join(out_dir, "onnx"))
    results = {name: {} for name in list(runners) + ["numpy_preprocess"]}
    for batch in (int(b) for b in FLAGS.batch_sizes):
        inputs = [ids[(k * batch) % len(ids):][:batch] for k in range(8)]
        inputs = [x if len(x) == batch else ids[:batch] for x in inputs]
        latencies = _time_alternately(runners, inputs, FLAGS.seconds, FLAGS.min_calls)
        for name, seconds in latencies.items():
            results[name][str(batch)] = _stats(seconds, batch)
        if len(lines) >= batch:
            encode = {"pre": pre.encode_lines}
            chunks = [lines[(k * batch) % len(lines):][:batch] for k in range(4)]
            chunks = [c if len(c) == batch else lines[:batch] for c in chunks]
            seconds = _time_alternately(encode, chunks, FLAGS.seconds / 3, FLAGS.min_calls)["pre"]
            results["numpy_preprocess"][str(batch)] = _stats(seconds, batch)
    results["file_bytes"] = {fmt: os.path.getsize(os.path.join(out_dir, fmt, name)) for fmt, name
                             in (("stablehlo", "model.stablehlo"), ("onnx", "model.onnx"))}
    return results


def _print(label: str, results: dict) -> None:
    for runtime in ("jax_jit", "onnxruntime", "numpy_preprocess"):
        for batch, stats in results[runtime].items():
            print(f"{label:>10} {runtime:>16} batch {batch:>5}: p50 {stats['p50_ms']:.3f} ms, "
                  f"p99 {stats['p99_ms']:.3f} ms, {stats['rows_per_s']:.0f} rows/s")


def main(argv):
    del argv
    xla_cpu.configure_process()
    data_dir = serving.load(FLAGS.workdir).data_dir
    ids = np.asarray(layout.open_rows(layout.ids_path(data_dir, "test")), np.int32)
    lines = _raw_lines(data_dir, max(int(b) for b in FLAGS.batch_sizes))
    results = {}
    with tempfile.TemporaryDirectory(prefix="mlctr_serving_") as tmp:
        for label, peer in ((FLAGS.peer, FLAGS.peer), ("ensemble", "")):
            out_dir = os.path.join(tmp, label)
            os.makedirs(out_dir)
            for fmt in ("stablehlo", "onnx"):
                manifest = exporter.export_run(FLAGS.workdir, os.path.join(out_dir, fmt), fmt,
                                               peer=peer)
            results[label] = _benchmark_model(out_dir, ids, lines)
            results[label]["peers"] = manifest["peers"]
            _print(label, results[label])
    print(json.dumps({"benchmark": "serving", "workdir": FLAGS.workdir,
                      "cpu_count": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2),
                      "results": results}))


if __name__ == "__main__":
    app.run(main)
