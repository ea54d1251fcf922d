"""Benchmark (not a test): does one jitted step for all peers cost what training them one by one does?

On one fixed stream of generated batches (batch 4096, 39 fields; embedding 16, DNN 400x3,
dropout 0.1, embedding L2 1e-5: lib.BENCH_MODELS; --vocab_size rows, default 1M,
about Criteo_x4's feature count), excluding compilation, it times
  (a) each of DeepFM, DCN, IPNN and FiBiNET trained alone,
  (b) the four in one jitted mutual step,
  (c) four stacked DeepFM peers in one mutual step,
all with the trainer's step (mlctr.mutual.make_train_step), round-robin so that a shared
machine slows every variant alike. The last printed line is one JSON object with
`single_peer_examples_per_sec` (DeepFM alone), `four_peer_examples_per_sec` (b),
`mutual_overhead` = time(b) / sum of the four times in (a) and
`vmap_overhead` = time(c) / (4 x DeepFM alone); target on CPU: both <= 1.05.

  python -m experiments.benchmarks.step                                  # ~5 min on 2 cores
  python -m experiments.benchmarks.step --quick                          # ~2 min
  python -m experiments.benchmarks.step --embedding_optimizer=lazy_adam  # sparse embedding rows
  python -m experiments.benchmarks.step --peer_execution=vmap            # default: auto
  python -m experiments.benchmarks.step --compute_dtype=bfloat16         # GPU/TPU speed of bf16
"""
import json
import types

from absl import app, flags

from experiments.benchmarks import lib

PEERS = ("deepfm", "dcn", "ipnn", "fibinet")


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined when run, not on import: the tests import some benchmarks' functions
    # beside other modules' flags.
    flags.DEFINE_integer("vocab_size", 1_000_000, 'embedding table rows')
    flags.DEFINE_enum("embedding_optimizer", "dense",
                      ["dense", "lazy_adam", "adagrad", "sgd"],
                      "optimizer of the embedding tables")
    flags.DEFINE_enum("peer_execution", "auto",
                      ["auto", "vmap", "unroll"],
                      "how the peers of one step run (mutual.peer_execution)")
    flags.DEFINE_enum("compute_dtype", "float32",
                      ["float32", "bfloat16"],
                      "the models' compute dtype (bfloat16: for GPU/TPU)")
    flags.DEFINE_integer("rounds", 6, "round-robin rounds")
    flags.DEFINE_integer("steps", 2, "timed steps per run per round")
    flags.DEFINE_bool("quick", False, "2 rounds of 1 step")


def main(argv):
    del argv
    args = types.SimpleNamespace(**FLAGS.flag_values_dict())
    if args.quick:
        args.rounds, args.steps = 2, 1

    print("machine:", lib.machine(), flush=True)
    kwargs = dict(embedding_optimizer=args.embedding_optimizer,
                  peer_execution=args.peer_execution, dtype=args.compute_dtype,
                  batches=lib.make_batches(args.vocab_size))
    runs = {name: lib.make_run(name, name, args.vocab_size, **kwargs) for name in PEERS}
    runs["mutual4"] = lib.make_run("mutual4", ",".join(PEERS), args.vocab_size, **kwargs)
    runs["deepfm4"] = lib.make_run("deepfm4", "deepfm*4", args.vocab_size, **kwargs)
    for run in runs.values():
        print(f"compiled {run.name:8s} in {run.compile_seconds:5.1f} s", flush=True)
    lib.interleave(list(runs.values()), args.rounds, args.steps)

    step_ms = {name: 1e3 * run.step_seconds for name, run in runs.items()}
    for name, run in runs.items():
        print(f"{name:8s} step {step_ms[name]:8.1f} ms (median of {len(run.times)}; "
              f"min {1e3 * min(run.times):.1f})  "
              f"{lib.BATCH_SIZE / run.step_seconds:9.0f} examples/s")
    solo_sum = sum(step_ms[name] for name in PEERS)
    result = {
        "single_peer_examples_per_sec": lib.BATCH_SIZE / runs["deepfm"].step_seconds,
        "four_peer_examples_per_sec": lib.BATCH_SIZE / runs["mutual4"].step_seconds,
        "four_deepfm_examples_per_sec": lib.BATCH_SIZE / runs["deepfm4"].step_seconds,
        "mutual_overhead": step_ms["mutual4"] / solo_sum,
        "vmap_overhead": step_ms["deepfm4"] / (4 * step_ms["deepfm"]),
        "step_ms": step_ms,
        "vocab_size": args.vocab_size,
        "batch_size": lib.BATCH_SIZE,
        "embedding_optimizer": args.embedding_optimizer,
        "peer_execution": args.peer_execution,
        "compute_dtype": args.compute_dtype,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
