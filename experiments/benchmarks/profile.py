"""Benchmark (not a test): where a CPU training step's time goes, by kind of XLA op.

The trainer's step (lib.make_run: stacked DeepFM peers, lib.BENCH_MODELS,
batch 4096 x 39 uniform ids) is traced with `jax.profiler` for a few steps at each
vocabulary size. XLA:CPU records one event per executed op (fusion, matmul, scatter,
sort, ...) under the op's name in the compiled HLO; each op is given a kind from the
opcodes it contains (`op_kinds`), and the events' durations are summed per kind and
divided by the number of steps. Two cores run ops side by side, so the kinds can sum
to more than the step's wall time. The step's wall time (untraced, median) and a
4096 x 1024 x 1024 float32 matmul's rate are measured in the same run, so the DNN's
matmul time can be set against the machine's matmul rate (bench_embedding's
`dnn_flop_efficiency`).

The last printed line is one JSON object: per vocabulary size `step_ms`, `op_ms` by
kind, `dnn_matmul_ms_at_reference` (the DNN's FLOPs at the reference rate), and
`matmul_gflops`.

  python -m experiments.benchmarks.profile    # 4 peers, lazy Adam, 10k and 10M rows
  python -m experiments.benchmarks.profile --peers=1 --vocab_sizes=1000000 \
      --embedding_optimizer=dense
"""
import collections
import glob
import gzip
import json
import re
import tempfile
import types

from absl import app, flags
import jax
import numpy as np

from experiments.benchmarks import lib

# Kinds in the order they are tested: the first that an op's opcodes match.
KINDS = (("matmul", {"dot", "convolution"}), ("scatter", {"scatter"}),
         ("gather", {"gather", "dynamic-slice"}), ("sort", {"sort"}),
         ("random bits", {"shift-right-logical", "xor"}), ("reduce", {"reduce"}))

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+.*?\s([a-z][\w\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def op_kinds(hlo_text: str) -> dict[str, str]:
    """Compiled-HLO instruction name -> kind (KINDS), from the opcodes it contains."""
    opcodes, calls, owner = collections.defaultdict(set), collections.defaultdict(set), {}
    computation = None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and "=" not in line.split("{")[0]:
            computation = header.group(1)
            continue
        found = _INSTRUCTION.match(line)
        if not found or computation is None:
            continue
        name, opcode = found.groups()
        owner[name] = computation
        opcodes[name].add(opcode)
        calls[name].update(_CALLS.findall(line))
    by_computation = collections.defaultdict(set)
    for name, computation in owner.items():
        by_computation[computation].add(name)

    def contained(name, seen):
        found = set(opcodes[name])
        for called in calls[name] - seen:
            seen.add(called)
            for inner in by_computation[called]:
                found |= contained(inner, seen)
        return found

    kinds = {}
    for name in owner:
        ops = contained(name, set())
        kinds[name] = next((kind for kind, wanted in KINDS if ops & wanted), "elementwise")
        if name.startswith(("ynn", "xnn")):  # XLA:CPU's matmul library fusions
            kinds[name] = "matmul"
    return kinds


def traced_op_ms(run: lib.StepRun, num_steps: int) -> dict[str, float]:
    """Milliseconds per step of each kind of op over `num_steps` traced steps."""
    batch = run.batches[0]
    # The step's own jitted function (mutual.make_train_step), at the alpha it runs with.
    compiled = run.step.lower(run.state, batch, run.alpha, run.non_finite).compile()
    kinds = op_kinds(compiled.as_text())
    with tempfile.TemporaryDirectory() as log_dir:
        jax.profiler.start_trace(log_dir, create_perfetto_trace=True)
        run.run(num_steps)
        jax.profiler.stop_trace()
        path = glob.glob(f"{log_dir}/**/*.trace.json.gz", recursive=True)[0]
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in kinds:
            totals[kinds[event["name"]]] += event.get("dur", 0.0) / 1e3
    return {kind: round(ms / num_steps, 1) for kind, ms in totals.most_common()}


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined when run, not on import: the tests import some benchmarks' functions
    # beside other modules' flags.
    flags.DEFINE_string("vocab_sizes", "10000,10000000", 'comma-separated embedding table rows')
    flags.DEFINE_integer("peers", 4, 'comma-separated peer counts')
    flags.DEFINE_enum("embedding_optimizer", "lazy_adam",
                      ["dense", "lazy_adam", "adagrad", "sgd"],
                      "optimizer of the embedding tables")
    flags.DEFINE_integer("steps", 4, "timed and traced steps each")


def main(argv):
    del argv
    args = types.SimpleNamespace(**FLAGS.flag_values_dict())
    print("machine:", lib.machine(), flush=True)
    spec = "deepfm" if args.peers == 1 else f"deepfm*{args.peers}"
    flops = lib.dnn_flops_per_example(lib.NUM_FIELDS * 16, (400, 400, 400))
    matmul_rates, result = [], {}
    for vocab_size in [int(v) for v in args.vocab_sizes.split(",")]:
        run = lib.make_run(f"{spec} {vocab_size}", spec, vocab_size,
                                 embedding_optimizer=args.embedding_optimizer)
        size = (4096, 1024, 1024)
        for _ in range(args.steps):
            matmul_rates.append(2 * np.prod(size) / lib.matmul_seconds(size) / 1e9)
            run.run(1)
        op_ms = traced_op_ms(run, args.steps)
        step_ms = 1e3 * run.step_seconds
        reference = float(np.median(matmul_rates))
        result[str(vocab_size)] = {
            "step_ms": round(step_ms, 1), "op_ms": op_ms,
            "op_ms_total": round(sum(op_ms.values()), 1),
            "dnn_matmul_ms_at_reference": round(
                1e3 * flops * lib.BATCH_SIZE * args.peers / (reference * 1e9), 1)}
        print(f"{vocab_size:>9} rows: step {step_ms:.1f} ms; op ms per step {op_ms}", flush=True)
        run.release()
    print(json.dumps({"vocab_sizes": result, "peers": args.peers,
                      "embedding_optimizer": args.embedding_optimizer,
                      "matmul_gflops": round(float(np.median(matmul_rates)), 1),
                      "batch_size": lib.BATCH_SIZE, "jax": jax.__version__}))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
