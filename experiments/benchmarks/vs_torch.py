"""Benchmark (not a test): mlctr vs DeepCTR-Torch 0.3.0, training examples/s side by side.

Same models (DeepFM and DCN), same generated batches (batch 4096 x 39 fields, field f
uniform over its own block of --vocab_size // 39 rows, default 1M rows in all), same
hyperparameters: the BARS Criteo_x4_001 sets (embedding 16, DNN 1000x5, dropout 0.2, DCN
4 cross layers, embedding L2 1e-5) except the batch size (4096 for both, BARS uses 10000)
and, with --dnn or --quick, a smaller DNN (400x3) to keep the runtime short. Both sides use
dense Adam (lr 1e-3) over every parameter; mlctr is also timed with its sparse lazy Adam on
the embedding rows (`mlctr_sparse_*`).

Each library runs in its own process: DeepCTR-Torch in a separate virtual environment
(--torch_python, default .venv-torch/bin/python; create it with
  python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0 \\
      deepctr-torch==0.3.0 absl-py requests pandas scikit-learn tqdm
using the CPU build of torch), mlctr in this one. This script drives both and times them
round-robin, one library computing at a time, so a shared machine slows both alike. The
torch worker gets the host allocator settings mlctr gives itself (mlctr/xla_cpu.py) unless
--torch_allocator=system.

The torch side replicates one iteration of DeepCTR-Torch's `BaseModel.fit` exactly:
forward on float inputs, BCE with reduction='sum' (as fit does), plus
`get_regularization_loss()`, backward, `optim.step()`. Its L2 is `l2 * sum(w^2)` where
FuxiCTR/mlctr use `l2 / 2 * sum(w^2)`, so it gets l2 = 5e-6 (the same penalty; applied to
the [V, 16] and the first-order [V, 1] embeddings on both sides; DCN's cross and DNN weights
unpenalised on both). Differences that remain, by library design: DeepCTR-Torch keeps one
embedding table per field (mlctr one concatenated table), its DCN adds a first-order (LR)
term that FuxiCTR's DCN does not have, and mlctr clips gradients at global norm 10 (FuxiCTR's
default), DeepCTR-Torch does not.

The last printed line is one JSON object: per model, each library's examples/s and
`ratio` = mlctr (dense Adam) / DeepCTR-Torch, `ratio_sparse` = mlctr (lazy Adam) / DeepCTR-Torch.

  python -m experiments.benchmarks.vs_torch            # BARS DNN 1000x5, ~10 min on 2 cores
  python -m experiments.benchmarks.vs_torch --quick    # DNN 400x3, fewer steps
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import types

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_FIELDS = 39
EMBEDDING_DIM = 16
L2 = 1e-5          # FuxiCTR convention: l2 / 2 * sum(w^2)
DROPOUT = 0.2
CROSS_LAYERS = 4


# ---------------------------------------------------------------------------
# The DeepCTR-Torch worker (runs in the torch environment; imports no JAX).


def torch_worker(args):
    import numpy as np
    import torch
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DCN, DeepFM

    data = np.load(args.batches)
    local_ids, labels = data["local_ids"], data["labels"]
    rows_per_field = int(data["rows_per_field"])
    columns = [SparseFeat(f"C{f}", vocabulary_size=rows_per_field, embedding_dim=EMBEDDING_DIM)
               for f in range(NUM_FIELDS)]
    dnn = tuple(int(u) for u in args.dnn.split(","))
    common = dict(dnn_hidden_units=dnn, l2_reg_linear=L2 / 2, l2_reg_embedding=L2 / 2,
                  l2_reg_dnn=0, dnn_dropout=DROPOUT, task="binary", device=args.torch_device,
                  seed=0)
    if args.model == "deepfm":
        model = DeepFM(columns, columns, **common)
    else:
        model = DCN(columns, columns, cross_num=CROSS_LAYERS, cross_parameterization="vector",
                    l2_reg_cross=0, **common)
    model.compile(torch.optim.Adam(model.parameters(), lr=1e-3), "binary_crossentropy")
    model.train()
    xs = [torch.from_numpy(x).float().to(args.torch_device) for x in local_ids]
    ys = [torch.from_numpy(y).float().to(args.torch_device) for y in labels]
    # On a GPU the step's backward and optimizer kernels run asynchronously: wait for them,
    # as mlctr's timing waits for its step (block_until_ready).
    sync = torch.cuda.synchronize if args.torch_device.startswith("cuda") else (lambda: None)

    def step(i):  # one iteration of BaseModel.fit
        x, y = xs[i % len(xs)], ys[i % len(ys)]
        y_pred = model(x).squeeze(-1)
        model.optim.zero_grad()
        loss = model.loss_func(y_pred, y, reduction="sum")
        total_loss = loss + model.get_regularization_loss() + model.aux_loss
        total_loss.item()
        total_loss.backward()
        model.optim.step()
        sync()

    position = 0
    for _ in range(2):  # warm-up
        step(position)
        position += 1
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        num_steps = int(line)
        if num_steps <= 0:
            break
        times = []
        for _ in range(num_steps):
            start = time.perf_counter()
            step(position)
            position += 1
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times}), flush=True)


class TorchWorker:
    """Handle on a worker process: `run(n)` times n steps there."""

    def __init__(self, torch_python, model, dnn, batches_path, allocator="same", device="cpu"):
        env = {**os.environ, "PYTHONPATH": REPO}  # the worker runs this module with -m
        if allocator == "same":
            # The host allocator settings mlctr applies to itself (one arena, no mmap, no
            # trimming), so that neither side pays for page faults the other avoids
            # (--torch_allocator=system measures torch with glibc's defaults).
            from mlctr import xla_cpu  # in-function: the worker's environment has no mlctr
            env["GLIBC_TUNABLES"] = xla_cpu.HOST_ALLOCATOR_TUNABLES
        self.proc = subprocess.Popen(
            [torch_python, "-m", "experiments.benchmarks.vs_torch", "--worker", f"--model={model}",
             f"--dnn={dnn}", f"--batches={batches_path}", f"--torch_device={device}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()
        self.times = []

    def _read(self):
        while True:  # skipping what the library itself prints (its version check)
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the DeepCTR-Torch worker died (see its error above)")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, num_steps):
        self.proc.stdin.write(f"{num_steps}\n")
        self.proc.stdin.flush()
        self.times.extend(self._read()["times"])

    def close(self):
        self.proc.stdin.write("0\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ---------------------------------------------------------------------------
# The driver (runs in mlctr's environment).


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined when run, not on import: the tests import some benchmarks' functions
    # beside other modules' flags.
    flags.DEFINE_bool("worker", False, "internal: the worker process's side")
    flags.DEFINE_string("batches", None, "internal: the worker process's side")
    flags.DEFINE_string("model", "deepfm", "internal: the worker process's side")
    flags.DEFINE_string("torch_python", os.path.join(REPO, ".venv-torch/bin/python"),
                        "the DeepCTR-Torch environment's python")
    flags.DEFINE_string("models", "deepfm,dcn", 'comma-separated models')
    flags.DEFINE_integer("vocab_size", 1_000_000, 'embedding table rows')
    flags.DEFINE_string("dnn", "1000,1000,1000,1000,1000", "DNN hidden units (BARS Criteo: 1000x5)")
    flags.DEFINE_integer("rounds", None, "round-robin rounds (4)")
    flags.DEFINE_integer("steps", None, "timed steps per library per round (2)")
    flags.DEFINE_enum("torch_allocator", "same",
                      ["same", "system"],
                      "glibc settings of the torch worker: mlctr's own or the defaults")
    flags.DEFINE_string("torch_device", "auto",
                        "DeepCTR-Torch's device: cpu, cuda, cuda:N, or auto (cuda when JAX "
                        "runs on a GPU, else cpu)")
    flags.DEFINE_bool("quick", False, "DNN 400x3 and, unless given, 2 rounds of 1 step")


def main(argv):
    del argv
    args = types.SimpleNamespace(**FLAGS.flag_values_dict())
    if args.worker:
        return torch_worker(args)
    if args.quick:
        args.dnn = "400,400,400"
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.steps = args.steps or (1 if args.quick else 2)
    if not os.path.exists(args.torch_python):
        sys.exit(f"no DeepCTR-Torch environment at {args.torch_python}: create it as the "
                 "docstring says, or pass --torch_python")

    # In-function: this module also runs as the torch worker, in an environment without
    # JAX or mlctr.
    from experiments.benchmarks import lib
    import numpy as np

    import jax
    if args.torch_device == "auto":
        args.torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    print("machine:", lib.machine(), f"| DeepCTR-Torch on {args.torch_device}", flush=True)
    dnn = tuple(int(u) for u in args.dnn.split(","))
    rows_per_field = args.vocab_size // NUM_FIELDS
    vocab_size = rows_per_field * NUM_FIELDS
    batches = lib.make_batches(vocab_size)
    offsets = np.arange(NUM_FIELDS, dtype=np.int32) * rows_per_field
    common = dict(embedding_dim=EMBEDDING_DIM, dnn_hidden_units=dnn, net_dropout=DROPOUT,
                  batch_norm=False, embedding_regularizer=L2, net_regularizer=0.0)
    models = {"deepfm": dict(model="deepfm", **common),
              "dcn": dict(model="dcn", num_cross_layers=CROSS_LAYERS, **common)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        batches_path = os.path.join(tmp, "batches.npz")
        np.savez(batches_path,
                 local_ids=np.stack([np.asarray(b["ids"]) - offsets for b in batches]),
                 labels=np.stack([np.asarray(b["label"]) for b in batches]),
                 rows_per_field=rows_per_field)
        for name in args.models.split(","):
            worker = TorchWorker(args.torch_python, name, args.dnn, batches_path,
                                 args.torch_allocator, args.torch_device)
            runs = [lib.make_run(f"mlctr {name} {opt}", name, vocab_size, models=models,
                                       batches=batches, embedding_optimizer=opt)
                    for opt in ("dense", "lazy_adam")]
            for r in range(args.rounds):
                items = [worker, *runs]
                for item in (items if r % 2 == 0 else items[::-1]):
                    item.run(args.steps)
            worker.close()
            torch_rate = lib.BATCH_SIZE / float(np.median(worker.times))
            dense_rate = lib.BATCH_SIZE / runs[0].step_seconds
            sparse_rate = lib.BATCH_SIZE / runs[1].step_seconds
            results[name] = {"deepctr_torch_examples_per_sec": torch_rate,
                             "mlctr_examples_per_sec": dense_rate,
                             "mlctr_sparse_examples_per_sec": sparse_rate,
                             "ratio": dense_rate / torch_rate,
                             "ratio_sparse": sparse_rate / torch_rate}
            print(f"{name}: DeepCTR-Torch {torch_rate:8.0f}  mlctr {dense_rate:8.0f} "
                  f"(x{dense_rate / torch_rate:.2f})  mlctr lazy Adam {sparse_rate:8.0f} "
                  f"(x{sparse_rate / torch_rate:.2f}) examples/s", flush=True)
            for run in runs:
                run.release()
    results["config"] = {"vocab_size": vocab_size, "batch_size": lib.BATCH_SIZE,
                         "dnn_hidden_units": list(dnn), "embedding_dim": EMBEDDING_DIM,
                         "net_dropout": DROPOUT, "torch": worker.info.get("torch"),
                         "torch_threads": worker.info.get("threads"),
                         "torch_allocator": args.torch_allocator,
                         "torch_device": args.torch_device}
    print(json.dumps(results))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
