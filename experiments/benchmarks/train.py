"""Benchmark (not a test): does the whole trainer train as fast as its bare jitted step?

The trainer (`mlctr.run.train.train_and_evaluate`: memory-mapped reader -> shuffled host
batches -> prefetch thread -> device -> jitted step -> metrics.jsonl / TensorBoard
logging) runs one epoch on a synthetic Criteo-format dataset of --rows raw rows (8:1:1
split, so 80% of them train), with four peers (DeepFM, DCN, IPNN, FiBiNET; embedding 16,
DNN 400x3, dropout 0.1: `lib.BENCH_MODELS`), batch 4096, dense Adam. Its rate is
the trainer's own: `results.json` `examples_per_sec`, which leaves out the first step
(compilation) and evaluation (the run evaluates once, at the end, and not on test).

The bare step is the very function the trainer runs (`mutual.make_train_step` over
`train.build`'s step), on a few of the dataset's own batches already on the device,
timed step by step like experiments/benchmarks/step.py (`lib.StepRun`). It is timed
before and after the trainer in the same process, so a shared machine's load touches
both; compare ratios from one run, not absolute numbers across runs.

The last printed line is one JSON object: `trainer_examples_per_sec`,
`step_examples_per_sec` (mean step time of both bare bursts, the same statistic as the
trainer's), `trainer_over_step` (their ratio; target on CPU >= 0.95),
`trainer_over_step_cpu` (the same ratio in CPU seconds per step, `TrainerCpuClock`: what
to read when the load average moved during the run), the per-interval
trainer rates from metrics.jsonl, the load average, cpu count, jax version, rows, batch
and peers.

  python -m experiments.benchmarks.train                  # 1M rows, ~5 min on 2 cores
  python -m experiments.benchmarks.train --peers='deepfm*4'   # 4 stacked DeepFM
  python -m experiments.benchmarks.train --rows=100000    # a quick look
"""
import functools
import json
import os
import shutil
import sys
import threading
import time
import types

from absl import app, flags
import jax
import ml_collections
import numpy as np

from experiments.benchmarks import lib
from mlctr import mutual, sharding, xla_cpu
from mlctr.configs import default
from mlctr.run import errors
from mlctr.run import inputs
from mlctr.run import train

PEERS = "deepfm,dcn,ipnn,fibinet"


def bench_config(args) -> ml_collections.ConfigDict:
    """The default config, reshaped into one epoch of the benchmark's peers."""
    config = default.get_config()
    units = tuple(int(u) for u in args.dnn_hidden_units.split(",") if u.strip())
    models = {name: {**hyper, "dnn_hidden_units": units}
              for name, hyper in lib.BENCH_MODELS.items()}
    with config.unlocked():
        config.models = ml_collections.ConfigDict({**config.models.to_dict(), **models})
    config.mode = "train"
    config.peers = args.peers
    config.data.dataset = "synthetic"
    config.data.num_rows = args.rows
    config.data.data_dir = os.path.join(os.path.abspath(args.workdir), f"data_{args.rows}")
    config.optimizer.embedding_optimizer = args.embedding_optimizer
    config.train.batch_size = args.batch_size
    config.train.num_epochs = 1
    config.train.eval_steps = 0        # one evaluation, at the end of the epoch
    config.train.test_at_end = False
    config.train.log_steps = args.log_steps
    config.checkpoint.ckpt_steps = 0   # only the final checkpoint, after the timed steps
    return config


def bare_step(config, run_dir: str, num_batches: int) -> lib.StepRun:
    """The trainer's jitted step on `num_batches` device-resident batches, compiled."""
    run = train.build(config, run_dir)
    rep = sharding.replicated(run.mesh)
    alpha = sharding.put(np.float32(config.mutual.alpha), rep)
    non_finite = sharding.put(mutual.finite_record(run.peers.size), rep)
    host_state = jax.device_get(train.initial_state(config, run.peers, run.optimizer,
                                                    run.dataset))
    state = sharding.put(host_state, run.state_shardings)
    place = functools.partial(sharding.global_batch, run.mesh,
                              batch_size=config.train.batch_size)
    batches = []
    for batch in run.dataset.train_batches(config.train.batch_size, seed=config.seed, epoch=0):
        batches.append(place(batch))
        if len(batches) == num_batches:
            break
    bare = lib.StepRun("bare", run.train_step, state, batches, run.peers.size, alpha=alpha,
                       non_finite=non_finite)
    start = time.perf_counter()
    bare.run(1)  # compiles
    bare.compile_seconds = time.perf_counter() - start
    bare.run(1)
    bare.times.clear()
    bare.cpu_times.clear()
    bare.page_faults.clear()
    return bare


def trainer_intervals(run_dir: str) -> list[float]:
    """examples/s of each logged interval of the run (metrics.jsonl train records)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r["examples_per_sec"] for r in records if r["kind"] == "train"]


class TrainerCpuClock:
    """This process's CPU seconds at each training record the trainer logs.

    A thread polls metrics.jsonl every `interval` seconds and notes `time.process_time()`
    when a new train record appears, so CPU seconds per step can be read between the
    first and the last logged step: on a shared machine whose load changes during the
    run, CPU time per step moves far less than wall time per step (it leaves out the
    time the process waited for a core, and so also any step the trainer left idle).
    """

    def __init__(self, run_dir: str, interval: float = 0.05):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.marks: list[tuple[int, float]] = []  # (step, CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)
        self._thread.start()

    def _poll(self, interval: float):
        while not self._stop.wait(interval):
            try:
                with open(self.path) as f:
                    lines = f.readlines()
            except OSError:
                continue
            steps = [json.loads(line)["step"] for line in lines
                     if line.endswith("\n") and '"kind": "train"' in line]
            if steps and (not self.marks or steps[-1] > self.marks[-1][0]):
                self.marks.append((steps[-1], time.process_time()))

    def stop(self) -> float | None:
        """CPU seconds per step between the first and the last record seen (None: < 2)."""
        self._stop.set()
        self._thread.join()
        if len(self.marks) < 2:
            return None
        (first_step, first_cpu), (last_step, last_cpu) = self.marks[0], self.marks[-1]
        return (last_cpu - first_cpu) / (last_step - first_step)


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined when run, not on import: the tests import some benchmarks' functions
    # beside other modules' flags.
    flags.DEFINE_integer("rows", 1_000_000, "synthetic raw rows (80% train)")
    flags.DEFINE_string("peers", PEERS, "peer spec of lib.BENCH_MODELS keys, e.g. 'deepfm*4'")
    flags.DEFINE_string("dnn_hidden_units", "400,400,400",
                        "the peers' DNN (smaller only for a smoke test)")
    flags.DEFINE_integer("batch_size", lib.BATCH_SIZE, 'examples per step')
    flags.DEFINE_enum("embedding_optimizer", "dense",
                      ["dense", "lazy_adam", "adagrad", "sgd"],
                      "optimizer of the embedding tables")
    flags.DEFINE_integer("log_steps", 50, "the trainer's logging interval (a host sync each)")
    flags.DEFINE_integer("bare_steps", 12, "bare steps timed before and again after the trainer")
    flags.DEFINE_string("workdir", os.path.join(lib.REPO, "runs", "bench_train"),
                        "the prepared dataset is kept here between runs")


def main(argv):
    del argv
    args = types.SimpleNamespace(**FLAGS.flag_values_dict())
    xla_cpu.configure_process()  # what `python -m mlctr.main` does first

    config = bench_config(args)
    run_dir = os.path.join(os.path.abspath(args.workdir), "run")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one
    start = time.perf_counter()
    inputs.ensure_prepared(config, run_dir)
    print(f"dataset ready in {time.perf_counter() - start:.1f} s", flush=True)
    print("machine:", lib.machine(), flush=True)
    load_before = os.getloadavg()

    bare = bare_step(config, run_dir, num_batches=4)
    print(f"bare step compiled in {bare.compile_seconds:.1f} s", flush=True)
    bare.run(args.bare_steps)
    before = list(bare.times)
    cpu_clock = TrainerCpuClock(run_dir)
    faults, releases = xla_cpu.minor_page_faults(), xla_cpu.host_memory_releases()
    start = time.perf_counter()
    results = train.train_and_evaluate(config, run_dir)
    trainer_wall = time.perf_counter() - start
    faults = xla_cpu.minor_page_faults() - faults
    releases = xla_cpu.host_memory_releases() - releases
    trainer_cpu_per_step = cpu_clock.stop()
    bare.run(args.bare_steps)
    after = bare.times[len(before):]
    load_after = os.getloadavg()
    bare_cpu_per_step = float(np.mean(bare.cpu_times))

    batch = config.train.batch_size
    step_rate = batch / float(np.mean(before + after))
    trainer_rate = results["examples_per_sec"]
    intervals = trainer_intervals(run_dir)
    print(f"bare step: {1e3 * np.mean(before):.1f} ms before, {1e3 * np.mean(after):.1f} ms "
          f"after the trainer (mean of {len(before)} each); median "
          f"{1e3 * np.median(before + after):.1f} ms")
    print(f"trainer: {results['steps']} steps, {results['train_seconds']:.1f} s timed, "
          f"{trainer_wall:.1f} s in all (compilation, evaluation, checkpoint); intervals "
          + ", ".join(f"{r:.0f}" for r in intervals) + " examples/s")
    print(json.dumps({
        "trainer_examples_per_sec": trainer_rate,
        "step_examples_per_sec": step_rate,
        "trainer_over_step": trainer_rate / step_rate,
        # CPU seconds per step, bare over trainer: the host work the trainer adds.
        "trainer_over_step_cpu": (bare_cpu_per_step / trainer_cpu_per_step
                                  if trainer_cpu_per_step else None),
        "step_cpu_seconds": bare_cpu_per_step,
        "trainer_cpu_seconds_per_step": trainer_cpu_per_step,
        # Minor page faults per step (bare: median; trainer: the whole run, evaluation and
        # test included, over its steps) and the host allocator's returns of free pages.
        "step_page_faults_per_step": bare.faults_per_step,
        "trainer_page_faults_per_step": faults / max(results["steps"], 1),
        "trainer_host_memory_releases": releases,
        "host_allocator": xla_cpu.host_allocator(),
        "step_examples_per_sec_before": batch / float(np.mean(before)),
        "step_examples_per_sec_after": batch / float(np.mean(after)),
        "step_examples_per_sec_median": batch / float(np.median(before + after)),
        "trainer_interval_examples_per_sec": intervals,
        "trainer_timed_steps_seconds": results["train_seconds"],
        "trainer_wall_seconds": trainer_wall,
        "steps": results["steps"],
        "rows": args.rows,
        "trained_examples": results["steps"] * batch,
        "batch_size": batch,
        "peers": args.peers,
        "dnn_hidden_units": args.dnn_hidden_units,
        "embedding_optimizer": args.embedding_optimizer,
        "log_steps": args.log_steps,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "python": sys.version.split()[0],
    }))


def _main(argv):
    try:
        main(argv)
    except errors.Preempted as e:  # SIGTERM: the run saved a checkpoint; one line, no traceback
        sys.exit(f"bench_train: {e}")
    except (errors.RunError, errors.NonFiniteLossError) as e:
        sys.exit(f"bench_train: error: {e}")


if __name__ == "__main__":
    _define_flags()
    app.run(_main)
