"""Benchmark of the data pipeline: generate, prepare, read (not a test).

    python -m experiments.benchmarks.data [--sizes=1000000,5000000] [--workdir=/tmp/bench]

Generates synthetic Criteo-format raw files of 1M and 5M rows, prepares each in a fresh
subprocess (so its peak RSS is its own, from getrusage), then reads the train split of
the largest in shuffled training batches of 10,000. The last printed line is one JSON
object with prepare_rows_per_sec_1m, prepare_rows_per_sec_5m, prepare_peak_rss_mb_1m,
prepare_peak_rss_mb_5m, reader_examples_per_sec (plus generation rates, the CPU-seconds
per million rows of generation and preparation, all threads, user + system: on a
shared machine these vary less than the wall-clock rates, and the load average).
Targets on 2 CPU cores: generate >= 1M rows/s, prepare >= 300k rows/s, peak RSS at 5M
within 1.2x of 1M, reader >= 2M examples/s. Takes about 1-2 minutes on 2 busy cores and
~1.5 GB of disk.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_list("sizes", ["1000000", "5000000"], "Synthetic rows to generate and prepare.")
flags.DEFINE_string("workdir", "", "Where to write (default: a temporary directory).")
flags.DEFINE_bool("keep", False, "Keep the generated files.")
flags.DEFINE_integer("batch_size", 10_000, "Reader batch size.")
FLAGS = flags.FLAGS

_CHILD = """
import json, resource, sys, time
from mlctr.data import {module}
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
start, start_cpu = time.perf_counter(), cpu()
{call}
seconds, cpu_seconds = time.perf_counter() - start, cpu() - start_cpu
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_mb}}))
"""


def _run_child(module: str, call: str) -> dict:
    """Runs `call` in a fresh Python; returns its wall and CPU seconds (all threads, user
    + system) and peak RSS."""
    code = _CHILD.format(module=module, call=call)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    if result.returncode:
        sys.exit(f"benchmark child failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _label(rows: int) -> str:
    return f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else str(rows)


def main(argv):
    """Runs the benchmark; the last printed line is the JSON summary."""
    del argv
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="mlctr_bench_")
    os.makedirs(workdir, exist_ok=True)
    results = {}
    prepared = None
    for rows in sorted(int(s) for s in FLAGS.sizes):
        label = _label(rows)
        raw = os.path.join(workdir, f"synthetic_{label}.txt")
        out = os.path.join(workdir, f"prepared_{label}")
        if os.path.exists(raw):  # generate() would reuse a finished file: time a fresh one
            os.remove(raw)
        generated = _run_child(
            "synthetic", f"synthetic.generate({raw!r}, num_rows={rows}, seed=2018)")
        results[f"generate_rows_per_sec_{label}"] = round(rows / generated["seconds"])
        results[f"generate_cpu_s_per_m_{label}"] = round(generated["cpu_seconds"] * 1e6 / rows, 2)
        print(f"generate {rows} rows: {generated['seconds']:.1f}s, "
              f"{generated['cpu_seconds']:.1f} CPU-s", flush=True)
        # The raw file was just written: read it once so both sizes start from the page
        # cache rather than one from the disk.
        with open(raw, "rb") as f:
            while f.read(1 << 24):
                pass
        done = _run_child("prepare", f"prepare.prepare('criteo', {raw!r}, {out!r}, overwrite=True)")
        results[f"prepare_rows_per_sec_{label}"] = round(rows / done["seconds"])
        results[f"prepare_cpu_s_per_m_{label}"] = round(done["cpu_seconds"] * 1e6 / rows, 2)
        results[f"prepare_peak_rss_mb_{label}"] = round(done["peak_rss_mb"], 1)
        print(f"prepare {rows} rows: {done['seconds']:.1f}s, {done['cpu_seconds']:.1f} CPU-s, "
              f"peak RSS {done['peak_rss_mb']:.0f} MB", flush=True)
        prepared = out

    from mlctr.data.reader import PreparedDataset

    dataset = PreparedDataset(prepared)
    for _ in dataset.train_batches(FLAGS.batch_size, seed=1, epoch=0):  # warm the cache
        pass
    start = time.perf_counter()
    examples = 0
    for batch in dataset.train_batches(FLAGS.batch_size, seed=0, epoch=0):
        examples += len(batch["label"])
    seconds = time.perf_counter() - start
    results["reader_examples_per_sec"] = round(examples / seconds)
    results["reader_batch_size"] = FLAGS.batch_size
    results["cpu_count"] = os.cpu_count()
    # Other work on the machine slows every number above: report how busy it was.
    results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(f"read {examples} train examples in batches of {FLAGS.batch_size}: {seconds:.2f}s")
    if not FLAGS.keep and not FLAGS.workdir:
        shutil.rmtree(workdir)
    print(json.dumps(results))


if __name__ == "__main__":
    app.run(main)
