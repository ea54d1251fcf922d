"""Benchmark (not a test): a study as replicas of one program vs its runs one by one.

Three parts (--parts), each timed in this one process (wall and CPU seconds: the CPU time
of this process and its threads, which a shared machine's load changes much less than
the wall time; compare ratios from one run, not absolute numbers across runs):

* study: the shared-rows finetune claim (experiments/finetune.py on
  experiments/configs/shared_real.py: DeepFM, DCN, IPNN, FiBiNET, --seeds seeds, control
  and mutual arms): its 2 x seeds finetunes trained one by one (`run_all(...,
  use_replicas=False)`, today's runner) and as replicas of one program, each from scratch
  in its own directory, from the same pretrained peers (trained first, untimed, as
  replicas, for --pretrain_max_steps steps: the finetunes' starting point only). Both
  include everything the runner does per run (build, compile with the persistent cache,
  train, evaluate, export); neither includes DeLong's test, the same for both. The
  replicas run twice: cold (compiling the replica program) and warm (from the cache).
  `study_speedup` = sequential wall / warm replicas wall (target on 2 CPU cores: >= 3).
* deepfm: --deepfm_replicas DeepFM runs of the synthetic default (seeds 0..R-1,
  independent training, --deepfm_max_steps steps each) one by one vs as one program.
* host: the host path's ceiling, the trainer (`train.TrainLoop.epoch`) with the step
  replaced by a no-op of the same shapes: examples/s of reader -> host batch ->
  prefetch thread -> device alone, on the synthetic default at --host_batch_size; and
  the reader alone (`train_batches`, no device). A single H200 trains DeepFM at ~4.2M
  examples/s: can these cores feed it?

The last printed line is one JSON object with every part's numbers, the load averages
before and after, cpu count and jax version.

  python -m experiments.benchmarks.replicas --workdir=/tmp/bench_replicas
  python -m experiments.benchmarks.replicas --workdir=/tmp/br --parts=host
"""
import dataclasses
import json
import os
import shutil
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments import datasets
from experiments import paper
from experiments import replicas as replica_runs
from experiments.benchmarks import lib
from experiments.configs import shared_real
from mlctr import distributed
from mlctr.configs import default
from mlctr.run import checkpoint
from mlctr.run import inputs
from mlctr.run import loop
from mlctr.run import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Benchmark directory (datasets, runs).", required=True)
flags.DEFINE_list("parts", ["study", "deepfm", "host"], "Parts to run: study, deepfm, host.")
flags.DEFINE_integer("seeds", 10, "Seeds of the study (each with a control and a mutual arm).")
flags.DEFINE_enum("dataset", "shared_avazu", ["shared_avazu", "shared_criteo"],
                  "The shared rows of the study.")
flags.DEFINE_integer("pretrain_max_steps", 65, "Steps of the (untimed) pretraining.")
flags.DEFINE_integer("finetune_max_steps", 0, "Finetune step cap (0: the config's schedule).")
flags.DEFINE_integer("deepfm_replicas", 64, "DeepFM runs of the deepfm part.")
flags.DEFINE_integer("deepfm_max_steps", 20, "Steps of each DeepFM run.")
flags.DEFINE_integer("host_batch_size", 4096, "Batch of the host-path part.")
flags.DEFINE_integer("host_epochs", 3, "Epochs of the host-path part (the first is warm-up).")
flags.DEFINE_string("compilation_cache", os.path.expanduser("~/.cache/mlctr/xla"),
                    "Persistent XLA compilation cache, as the runners use it ('' disables).")


def timed(fn):
    """(fn(), wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return path


def compare(runs_in, root: str) -> dict:
    """The runs `runs_in(directory)` one by one, then as replicas twice: the first compiles
    the replica program (a new R), the second finds it in the persistent compilation
    cache, as the runs one by one find theirs. Times, and the agreement of the results."""
    out = {}
    for way, use in (("sequential", False), ("replicas_cold", True), ("replicas", True)):
        runs = runs_in(fresh(os.path.join(root, way)))
        results, wall, cpu = timed(lambda: replica_runs.run_all(runs, use_replicas=use))
        out[way] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "runs": len(runs),
                    "steps": sum(r["steps"] for r in results),
                    "valid_auc": [r["valid"][r["peers"][0]]["auc"] for r in results]}
    for suffix, way in (("", "replicas"), ("_cold", "replicas_cold")):
        out["speedup" + suffix] = round(out["sequential"]["wall_s"] / out[way]["wall_s"], 3)
        out["cpu_speedup" + suffix] = round(out["sequential"]["cpu_s"] / out[way]["cpu_s"], 3)
    out["max_valid_auc_difference"] = float(np.max(np.abs(
        np.subtract(out["sequential"]["valid_auc"], out["replicas"]["valid_auc"]))))
    return out


def study_part() -> dict:
    """The shared-rows finetune claim, finetunes one by one vs as replicas."""
    root = os.path.abspath(FLAGS.workdir)
    base = shared_real.get_config()
    with base.unlocked():
        datasets.configure(base, root, choice=FLAGS.dataset)
    if FLAGS.finetune_max_steps:
        base.finetune.max_steps = FLAGS.finetune_max_steps
    seeds = list(range(FLAGS.seeds))
    pretrain = [paper.pretrain_run(base, os.path.join(root, "pretrain"), s, base.peers,
                                   FLAGS.pretrain_max_steps) for s in seeds]
    replica_runs.run_all([(c, d) for d, c in pretrain], use_replicas=True)

    def finetunes(directory):
        return [(paper.run_config(base, seed=s, peers=base.peers, alpha=alpha, init_from=d),
                 os.path.join(directory, f"seed{s}", arm))
                for s, (d, _) in zip(seeds, pretrain)
                for arm, alpha in (("control", 0.0), ("mutual", base.mutual.alpha))]

    out = compare(finetunes, os.path.join(root, "study"))
    out.update(dataset=FLAGS.dataset, seeds=len(seeds), peers=base.peers,
               pretrain_max_steps=FLAGS.pretrain_max_steps)
    return out


def synthetic_config(peers: str, max_steps: int):
    config = default.get_config()
    config.mode = "train"
    config.peers = peers
    config.data.data_dir = os.path.join(os.path.abspath(FLAGS.workdir), "data", "synthetic")
    config.train.max_steps = max_steps
    config.train.test_at_end = False
    config.checkpoint.ckpt_steps = 0
    return config


def deepfm_part() -> dict:
    """R DeepFM runs of the synthetic default one by one vs as replicas."""
    def runs(directory):
        out = []
        for s in range(FLAGS.deepfm_replicas):
            config = synthetic_config("deepfm", FLAGS.deepfm_max_steps)
            config.seed = s
            out.append((config, os.path.join(directory, f"seed{s}")))
        return out

    out = compare(runs, os.path.join(os.path.abspath(FLAGS.workdir), "deepfm"))
    out.update(count=FLAGS.deepfm_replicas, max_steps=FLAGS.deepfm_max_steps)
    return out


def noop_step(num_peers: int):
    """A step of the real one's shapes that does nothing but read the batch."""

    def step(state, batch, alpha, non_finite):
        touched = (jnp.sum(batch["ids"][:, 0]) * 0).astype(jnp.float32) + alpha * 0
        zeros = jnp.zeros((num_peers,), jnp.float32) + touched
        measurements = {k: zeros for k in ("loss", "bce", "mutual", "l2", "grad_norm")}
        return state, {**measurements, "alpha": alpha}, non_finite

    return jax.jit(step, donate_argnums=(0,))


def host_part() -> dict:
    """The trainer's epochs with a no-op step, and the reader alone."""
    config = synthetic_config("deepfm", 0)
    config.train.batch_size = FLAGS.host_batch_size
    config.train.num_epochs = FLAGS.host_epochs + 1
    config.train.eval_steps = 10 ** 9
    config.train.log_steps = 10 ** 9
    run_dir = fresh(os.path.join(os.path.abspath(FLAGS.workdir), "host"))
    config.lock()
    inputs.ensure_prepared(config, run_dir)
    run = train.build(config, run_dir)
    checkpoints = checkpoint.RunCheckpoints(run_dir, keep=1)
    live = train.restore_or_start(run, checkpoints)
    run = dataclasses.replace(run, train_step=noop_step(run.peers.size))
    trainer = loop.TrainLoop(run, live, checkpoints)
    trainer.watcher = loop.PreemptionWatcher()
    trainer.epoch()  # warm-up: compilation, page cache
    _, wall, cpu = timed(lambda: [trainer.epoch() for _ in range(FLAGS.host_epochs - 1)])
    trainer.watcher.close()
    examples = (FLAGS.host_epochs - 1) * run.steps_per_epoch * config.train.batch_size

    def read_only():
        for e in range(FLAGS.host_epochs - 1):
            for _ in run.dataset.train_batches(config.train.batch_size, seed=0, epoch=e):
                pass

    _, reader_wall, reader_cpu = timed(read_only)
    checkpoints.close()
    return {"trainer_noop_examples_per_sec": round(examples / wall),
            "trainer_noop_cpu_examples_per_sec": round(examples / cpu),
            "reader_examples_per_sec": round(examples / reader_wall),
            "reader_cpu_examples_per_sec": round(examples / reader_cpu),
            "batch_size": config.train.batch_size, "train_rows": run.dataset.num_examples("train"),
            "fields": run.dataset.num_fields, "h200_deepfm_examples_per_sec": 4.2e6}


def main(argv):
    del argv
    distributed.configure_runtime(FLAGS.compilation_cache)
    print("machine:", lib.machine(), flush=True)
    out = {"load_before": os.getloadavg()}
    parts = {"study": study_part, "deepfm": deepfm_part, "host": host_part}
    for name in FLAGS.parts:
        out[name] = parts[name]()
        print(name, json.dumps(out[name]), flush=True)
    if "study" in out:
        out["study_speedup"] = out["study"]["speedup"]
    if "host" in out:
        out["host_examples_per_sec"] = out["host"]["trainer_noop_examples_per_sec"]
    out.update(load_after=os.getloadavg(), cpus=os.cpu_count(), jax=jax.__version__)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    app.run(main)
