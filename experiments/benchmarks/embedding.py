"""Benchmark (not a test): DeepFM step time vs vocabulary size, dense Adam vs sparse row updates.

The trainer's step (mlctr.mutual.make_train_step) for DeepFM (embedding 16, DNN 400x3,
dropout 0.1, embedding L2 1e-5: lib.BENCH_MODELS) at batch 4096 x 39 fields, with
vocabularies of 10k, 1M and 10M rows, for 1 and 4 stacked peers, with dense optax Adam
('dense') and with sparse lazy Adam on the embedding rows ('lazy_adam', mlctr/sparse.py).
Compilation is excluded. Every timed step of a configuration comes right after one step
of the sparse 10k run of the same peer count (the reference), and `sparse_10m_over_10k` is
the median over those pairs of 10M step / reference step: a ratio measured side by side,
robust to the load of a shared machine changing by tens of percent within a minute. At
1M rows every timed step sits between two 4096x1024x1024 float32 matmuls; per step,
efficiency = DNN FLOPs x examples/s / the matmul FLOP/s around it (the DNN's forward and
backward matmuls, 3.42 MFLOP per example per peer: the arithmetic ceiling of this step), and
`dnn_flop_efficiency` is the median over steps.

The last printed line is one JSON object: `dense_step_ms` and `sparse_step_ms` keyed by
vocabulary size then peer count, `sparse_10m_over_10k` (4 peers; `_1peer` too),
`dnn_flop_efficiency` and `dnn_flop_efficiency_dense` keyed by peer count (1M rows),
`matmul_gflops`, `page_faults_per_step` (minor faults; 0 once XLA's host buffers are reused,
see mlctr/xla_cpu.py).

  python -m experiments.benchmarks.embedding    # ~10 min on 2 cores; 10M x 4 dense: ~16 GB
                                                   # (with <= 24 GB: MLCTR_HOST_ALLOCATOR=system
                                                   # or --skip_dense_above=1000000, ~4 min;
                                                   # mlctr/xla_cpu.py)
  python -m experiments.benchmarks.embedding --quick    # 1 round, no dense step at 10M rows
"""
import json
import types

from absl import app, flags
import numpy as np

from experiments.benchmarks import lib

DEEPFM_DNN = (400, 400, 400)


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined when run, not on import: the tests import some benchmarks' functions
    # beside other modules' flags.
    flags.DEFINE_string("vocab_sizes", "10000,1000000,10000000",
                        "comma-separated embedding table rows")
    flags.DEFINE_string("peers", "1,4", 'comma-separated peer counts')
    flags.DEFINE_enum("sparse_optimizer", "lazy_adam",
                      ["lazy_adam", "adagrad", "sgd"],
                      "the sparse embedding optimizer timed against dense Adam")
    flags.DEFINE_integer("rounds", 3, 'round-robin rounds')
    flags.DEFINE_integer("steps", 2, "timed steps per run per round (rounds x steps pairs in all)")
    flags.DEFINE_integer("skip_dense_above", 0,
                         "no dense step above this many rows (0: none skipped)")
    flags.DEFINE_bool("quick", False, 'fewer rounds and steps, no dense step above 1M rows')


def main(argv):
    del argv
    args = types.SimpleNamespace(**FLAGS.flag_values_dict())
    if args.quick:
        args.rounds, args.steps = 1, 2
        args.skip_dense_above = args.skip_dense_above or 1_000_000
    vocab_sizes = [int(v) for v in args.vocab_sizes.split(",")]
    peer_counts = [int(n) for n in args.peers.split(",")]
    smallest, large = min(vocab_sizes), max(vocab_sizes)
    flops_per_example = lib.dnn_flops_per_example(
        lib.NUM_FIELDS * 16, DEEPFM_DNN)

    print("machine:", lib.machine(), flush=True)
    step_ms = {"dense": {}, args.sparse_optimizer: {}}
    faults = {"dense": {}, args.sparse_optimizer: {}}
    ratios, efficiency, matmul_rates = {}, {"dense": {}, args.sparse_optimizer: {}}, []
    for num_peers in peer_counts:
        spec = "deepfm" if num_peers == 1 else f"deepfm*{num_peers}"
        reference = lib.make_run(f"{args.sparse_optimizer} {smallest} x{num_peers}", spec,
                                       smallest, embedding_optimizer=args.sparse_optimizer)
        for vocab_size in vocab_sizes:
            for optimizer in (args.sparse_optimizer, "dense"):
                if (optimizer == "dense" and args.skip_dense_above
                        and vocab_size > args.skip_dense_above):
                    continue
                name = f"{optimizer} {vocab_size} x{num_peers}"
                if optimizer == args.sparse_optimizer and vocab_size == smallest:
                    run = reference
                else:
                    run = lib.make_run(name, spec, vocab_size, embedding_optimizer=optimizer)
                reference_start = len(reference.times)
                step_efficiency, matmuls, pair_ratios = [], [], []
                for _ in range(args.rounds * args.steps):
                    if run is not reference:
                        reference.run(1)
                    if vocab_size == 1_000_000:
                        # The matmul right before and after each step: the load of a
                        # shared machine changes within seconds.
                        before = lib.matmul_seconds()
                        run.run(1)
                        after = lib.matmul_seconds()
                        rate = 2 * 4096 * 1024 * 1024 / (0.5 * (before + after))
                        matmuls.append(rate)
                        step_efficiency.append(flops_per_example * num_peers *
                                               lib.BATCH_SIZE / run.times[-1] / rate)
                    else:
                        run.run(1)
                    if run is not reference:
                        pair_ratios.append(run.times[-1] / reference.times[-1])
                ms = 1e3 * run.step_seconds
                step_ms[optimizer].setdefault(str(vocab_size), {})[str(num_peers)] = ms
                faults[optimizer].setdefault(str(vocab_size), {})[str(num_peers)] = (
                    run.faults_per_step)
                line = (f"{name:28s} step {ms:8.1f} ms (compile {run.compile_seconds:.0f} s, "
                        f"{run.faults_per_step:.0f} page faults/step)")
                if run is not reference:
                    reference_ms = 1e3 * float(np.median(reference.times[reference_start:]))
                    line += f"   | {reference.name} alongside: {reference_ms:.1f} ms"
                    if optimizer == args.sparse_optimizer and vocab_size == large:
                        ratios[num_peers] = float(np.median(pair_ratios))
                        line += f"   | ratio per pair: {' '.join(f'{q:.2f}' for q in pair_ratios)}"
                if matmuls:
                    rate = float(np.median(matmuls))
                    matmul_rates.extend(matmuls)
                    efficiency[optimizer][str(num_peers)] = float(np.median(step_efficiency))
                    line += (f"   | matmul {rate / 1e9:.1f} GFLOP/s, DNN efficiency "
                             f"{efficiency[optimizer][str(num_peers)]:.2f} (per step: "
                             f"{' '.join(f'{e:.2f}' for e in step_efficiency)})")
                print(line, flush=True)
                if run is not reference:
                    run.release()
        reference.release()

    result = {
        "dense_step_ms": step_ms["dense"],
        "sparse_step_ms": step_ms[args.sparse_optimizer],
        "sparse_optimizer": args.sparse_optimizer,
        "sparse_10m_over_10k": ratios.get(4),
        "sparse_10m_over_10k_1peer": ratios.get(1),
        "dnn_flop_efficiency": efficiency[args.sparse_optimizer],
        "dnn_flop_efficiency_dense": efficiency["dense"],
        "page_faults_per_step": faults,
        "matmul_gflops": float(np.median(matmul_rates)) / 1e9 if matmul_rates else None,
        "dnn_mflop_per_example": flops_per_example / 1e6,
        "batch_size": lib.BATCH_SIZE,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
