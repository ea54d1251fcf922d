"""Benchmark (not a test): mlctr vs FuxiCTR 2.3.10 on the same files, side by side.

One synthetic Criteo-format raw file (mlctr.data.synthetic; --rows train rows, so
--rows / 0.8 in all) and mlctr's seeded 8:1:1 split of it (mlctr.data.split, seed 2018),
written out as the train/valid/test csv files FuxiCTR reads, so both libraries see the
same rows. Measured, each library in its own process:

1. Preprocessing of the raw rows (BARS Criteo_x4_001: integers bucketed by
   floor(ln(x)^2), min count 10): mlctr's `mlctr.data.prepare.prepare` on the raw file,
   FuxiCTR's `build_dataset` with its Criteo `CustomizedFeatureProcessor` on the csv
   files. Rows/s (timed around that call inside the worker) and peak memory, both
   measured by this script for each worker process: the kernel's peak RSS of the largest
   single process (`os.wait4`; mlctr prepares in one process), and for FuxiCTR's Ray
   workers also the summed proportional set size (PSS) of the process and all its
   descendants, sampled every 0.1 s; both include the library's imports.
2. Training, for DeepFM, DCN and IPNN (FiBiNET too, with --models, best at fewer --rows:
   its DNN input is 23,712 wide): embedding 16, DNN 400x3, dropout 0.1, embedding L2 1e-5
   (l2/2 sum w^2 on both), DCN 3 cross layers, FiBiNET reduction 3 and field-interaction
   bilinear layers, batch 4096, Adam 1e-3, gradient clipping at global norm 10, one
   epoch, one evaluation on valid at its end, then test AUC of the best weights; once
   per --seeds seed (two by default), so each library's AUC spread from run to run is
   measured beside the gap between them. The training rate is examples / training seconds, data
   loading included, evaluation excluded: mlctr's trainer clock (results.json
   `examples_per_sec`, which also leaves out the first step, its compilation) and
   FuxiCTR's `fit` time less its `eval_step` time. `wall_ratio` (FuxiCTR / mlctr seconds)
   compares the whole run instead: model build, compilation, training, evaluation, test.

FuxiCTR's wheel ships its layers and `BaseModel` but not its model zoo: DeepFM, DCN, PNN
(inner product) and FiBiNET are built here from FuxiCTR's own layers exactly as its
model_zoo/{DeepFM,DCN,PNN,FiBiNET}/src does (FeatureEmbedding, FactorizationMachine,
MLP_Block, CrossNet, InnerProductInteraction, SqueezeExcitation, BilinearInteractionV2,
LogisticRegression; `reset_parameters` initialisation).

FuxiCTR runs in its own virtual environment (--fuxictr_python, default
.venv-fuxictr/bin/python), made with the CPU build of torch first, then the pinned rest
(polars 2.x breaks fuxictr 2.3.10):
  python3 -m venv .venv-fuxictr
  .venv-fuxictr/bin/pip install torch==2.13.0
  .venv-fuxictr/bin/pip install -r experiments/benchmarks/requirements-fuxictr.txt
mlctr runs in this one. The runs go one at a time, the order of the two libraries
alternating from model to model.

3. The DNN tower alone, per model: each library's MLP (its input width, 400x3, dropout,
   BCE, Adam, gradient clipping) stepping on one fixed random batch of 4096, median of 20
   steps, against that library's whole training step (4096 / its training examples/s).
   The tower is most of a step's arithmetic, so FuxiCTR's step over mlctr's tower
   (`train_ratio_ceiling`) is the most `train_ratio` could be with mlctr's matmuls as
   they are on this CPU.

The last printed line is one JSON object: `prepare_ratio` (mlctr / FuxiCTR rows/s),
`peak_memory_ratio` (mlctr / FuxiCTR peak, each the larger of the sampled PSS and the
largest process's RSS; `peak_rss_ratio` of the RSS alone),
and per model `train_ratio` (mlctr / FuxiCTR training examples/s over all seeds),
`wall_ratio`, both libraries' test AUCs per seed, `auc_gap` (mlctr's mean less FuxiCTR's)
`fuxictr_auc_spread` (max - min over its seeds), and the tower figures
(`*_tower_ms`, `*_step_ms`, `*_step_over_tower`, `train_ratio_ceiling`).

  python -m experiments.benchmarks.vs_fuxictr                 # 1M train rows, ~30 min on 2 cores
  python -m experiments.benchmarks.vs_fuxictr --rows=100000 --models=fibinet
  python -m experiments.benchmarks.vs_fuxictr --rows=200000 --seeds=2019   # a quick look
"""
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from absl import app, flags
import types

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = ("deepfm", "dcn", "ipnn", "fibinet")
BATCH_SIZE = 4096
SPLIT_SEED = 2018
MIN_COUNT = 10  # BARS Criteo_x4_001
INT_COLUMNS = [f"I{i}" for i in range(1, 14)]
STR_COLUMNS = [f"C{i}" for i in range(1, 27)]
NUM_FIELDS = len(INT_COLUMNS) + len(STR_COLUMNS)
TOWER_STEPS = 20  # timed steps of the DNN tower alone (after 3 untimed ones)
# The hyperparameters both sides train with (mlctr's names; the FuxiCTR worker maps them).
HYPER = dict(embedding_dim=16, dnn_hidden_units=(400, 400, 400), net_dropout=0.1,
             batch_norm=False, embedding_regularizer=1e-5, net_regularizer=0.0,
             num_cross_layers=3, reduction_ratio=3, bilinear_type="field_interaction",
             learning_rate=1e-3, grad_clip_norm=10.0)


# ---------------------------------------------------------------------------
# FuxiCTR workers (run in .venv-fuxictr; import neither JAX nor mlctr).


def fuxictr_prepare(job: dict) -> dict:
    """FuxiCTR's own preprocessing of the csv files into its parquet dataset."""
    import logging
    logging.getLogger().setLevel(logging.WARNING)
    from fuxictr.datasets.criteo import CustomizedFeatureProcessor
    from fuxictr.preprocess import build_dataset

    feature_cols = [{"name": INT_COLUMNS, "active": True, "dtype": "float", "fill_na": 0,
                     "preprocess": "convert_to_bucket", "type": "categorical"},
                    {"name": STR_COLUMNS, "active": True, "dtype": "str", "fill_na": "",
                     "type": "categorical"}]
    processor = CustomizedFeatureProcessor(
        feature_cols=feature_cols, label_col={"name": "label", "dtype": "float"},
        dataset_id="criteo_synthetic", data_root=job["out"])
    start = time.perf_counter()
    build_dataset(processor, train_data=job["csv"]["train"], valid_data=job["csv"]["valid"],
                  test_data=job["csv"]["test"], data_format="csv",
                  min_categr_count=MIN_COUNT)
    return {"seconds": time.perf_counter() - start}


def fuxictr_model(name: str, feature_map, params: dict):
    """DeepFM, DCN, IPNN or FiBiNET built from FuxiCTR's layers as its model_zoo does."""
    import torch
    from torch import nn
    from fuxictr.pytorch import layers
    from fuxictr.pytorch.models import BaseModel

    class Model(BaseModel):
        def __init__(self):
            super().__init__(feature_map, model_id=name, gpu=-1,
                             embedding_regularizer=params["embedding_regularizer"],
                             net_regularizer=params["net_regularizer"], **params["base"])
            dim, units = params["embedding_dim"], list(params["dnn_hidden_units"])
            mlp = dict(hidden_units=units, hidden_activations="ReLU",
                       dropout_rates=params["net_dropout"], batch_norm=params["batch_norm"])
            self.embedding_layer = layers.FeatureEmbedding(feature_map, dim)
            flat = feature_map.sum_emb_out_dim()
            if name == "deepfm":    # model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py
                self.fm = layers.FactorizationMachine(feature_map)
                self.mlp = layers.MLP_Block(input_dim=flat, output_dim=1,
                                            output_activation=None, **mlp)
            elif name == "fibinet":  # model_zoo/FiBiNET/src/FiBiNET.py
                fields = feature_map.num_fields
                self.senet_layer = layers.SqueezeExcitation(fields, params["reduction_ratio"],
                                                            "ReLU")
                self.bilinear_interaction1 = layers.BilinearInteractionV2(
                    fields, dim, params["bilinear_type"])
                self.bilinear_interaction2 = layers.BilinearInteractionV2(
                    fields, dim, params["bilinear_type"])
                self.lr_layer = layers.LogisticRegression(feature_map, use_bias=False)
                self.dnn = layers.MLP_Block(input_dim=fields * (fields - 1) * dim, output_dim=1,
                                            output_activation=None, **mlp)
            elif name == "dcn":     # model_zoo/DCN/DCN_torch/src/DCN.py
                self.dnn = layers.MLP_Block(input_dim=flat, output_dim=None,
                                            output_activation=None, **mlp)
                self.crossnet = layers.CrossNet(flat, params["num_cross_layers"])
                self.fc = nn.Linear(flat + units[-1], 1)
            else:                   # model_zoo/PNN/src/PNN.py, product_type="inner"
                fields = feature_map.num_fields
                self.inner_product_layer = layers.InnerProductInteraction(
                    fields, output="inner_product")
                self.dnn = layers.MLP_Block(input_dim=fields * (fields - 1) // 2 + flat,
                                            output_dim=1,
                                            output_activation=self.output_activation, **mlp)
            self.compile("adam", "binary_crossentropy", params["learning_rate"])
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            if name == "deepfm":
                emb = self.embedding_layer(X)
                y = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1))
                return {"y_pred": self.output_activation(y)}
            if name == "fibinet":
                emb = self.embedding_layer(X)
                comb = torch.cat([self.bilinear_interaction1(emb),
                                  self.bilinear_interaction2(self.senet_layer(emb))], dim=1)
                y = self.lr_layer(X) + self.dnn(torch.flatten(comb, start_dim=1))
                return {"y_pred": self.output_activation(y)}
            if name == "dcn":
                emb = self.embedding_layer(X, flatten_emb=True)
                y = self.fc(torch.cat([self.crossnet(emb), self.dnn(emb)], dim=-1))
                return {"y_pred": self.output_activation(y)}
            emb = self.embedding_layer(X)
            dense = torch.cat([emb.flatten(start_dim=1), self.inner_product_layer(emb)], dim=1)
            return {"y_pred": self.dnn(dense)}

    return Model()


def fuxictr_train(job: dict) -> dict:
    """One epoch of one model on FuxiCTR's prepared dataset, then its test AUC."""
    import logging
    logging.getLogger().setLevel(logging.WARNING)
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    start = time.perf_counter()
    seed_everything(job["seed"])
    data_dir = os.path.join(job["data"], "criteo_synthetic")
    feature_map = FeatureMap("criteo_synthetic", data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"),
                     {"embedding_dim": job["hyper"]["embedding_dim"]})
    params = {**job["hyper"], "base": dict(
        model_root=job["out"], verbose=0, metrics=["logloss", "AUC"], monitor="AUC",
        early_stop_patience=2, optimizer="adam", loss="binary_crossentropy")}
    model = fuxictr_model(job["model"], feature_map, params)
    os.makedirs(model.model_dir, exist_ok=True)  # FuxiCTR's run script makes it (set_logger)
    loader = dict(batch_size=BATCH_SIZE, data_format="parquet")
    train_gen, valid_gen = RankDataLoader(
        feature_map, stage="train", train_data=os.path.join(data_dir, "train.parquet"),
        valid_data=os.path.join(data_dir, "valid.parquet"), shuffle=True, **loader)
    eval_seconds = [0.0]
    eval_step = model.eval_step

    def timed_eval_step():
        begin = time.perf_counter()
        eval_step()
        eval_seconds[0] += time.perf_counter() - begin

    model.eval_step = timed_eval_step
    fit_start = time.perf_counter()
    model.fit(train_gen, epochs=1, validation_data=valid_gen,
              max_gradient_norm=job["hyper"]["grad_clip_norm"])
    train_seconds = time.perf_counter() - fit_start - eval_seconds[0]
    test_gen = RankDataLoader(feature_map, stage="test",
                              test_data=os.path.join(data_dir, "test.parquet"), **loader)
    test = model.evaluate(test_gen)
    examples = train_gen.num_samples
    return {"examples": examples, "train_seconds": train_seconds,
            "examples_per_sec": examples / train_seconds, "test_auc": float(test["AUC"]),
            "test_logloss": float(test["logloss"]), "wall_seconds": time.perf_counter() - start}


def tower_input_width(model: str, embedding_dim: int) -> int:
    """Width of a model's DNN input: the flat field embeddings, plus IPNN's inner products;
    FiBiNET's DNN reads its two bilinear layers' F(F-1)/2 field pairs each."""
    flat = NUM_FIELDS * embedding_dim
    pairs = NUM_FIELDS * (NUM_FIELDS - 1) // 2
    return {"deepfm": flat, "dcn": flat, "ipnn": flat + pairs,
            "fibinet": 2 * pairs * embedding_dim}[model]


def _tower_timing(step, steps: int) -> dict:
    """Median and mean seconds of `steps` calls of `step()` (each waits for its result)."""
    for _ in range(3):  # compilation / warm-up
        step()
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    times.sort()
    return {"tower_step_seconds": times[len(times) // 2],
            "tower_mean_seconds": sum(times) / len(times), "tower_steps": steps}


def fuxictr_tower(job: dict) -> dict:
    """FuxiCTR's MLP_Block alone (the model's DNN tower): forward, backward and Adam on one
    fixed random batch, as its training step runs it (BCE on the logit, gradient clipping)."""
    import torch
    from fuxictr.pytorch import layers

    torch.manual_seed(job["seed"])
    hyper = job["hyper"]
    tower = layers.MLP_Block(input_dim=job["width"], output_dim=1, output_activation=None,
                             hidden_units=list(hyper["dnn_hidden_units"]),
                             hidden_activations="ReLU", dropout_rates=hyper["net_dropout"],
                             batch_norm=hyper["batch_norm"])
    optimizer = torch.optim.Adam(tower.parameters(), lr=hyper["learning_rate"])
    x = torch.randn(BATCH_SIZE, job["width"])
    y = torch.randint(0, 2, (BATCH_SIZE, 1)).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        optimizer.zero_grad()
        loss = loss_fn(tower(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tower.parameters(), hyper["grad_clip_norm"])
        optimizer.step()

    tower.train()
    return _tower_timing(step, job["steps"])


# ---------------------------------------------------------------------------
# mlctr workers (run in this environment). mlctr is imported inside them (and inside the
# driver's functions): this module also runs as the FuxiCTR worker, whose environment has
# no JAX or mlctr.


def mlctr_tower(job: dict) -> dict:
    """mlctr's MLPBlock alone (the model's DNN tower): forward, backward and Adam jitted into
    one step, on one fixed random batch, as the trainer's step runs it (BCE on the logit,
    gradient clipping, dropout bits drawn each step)."""
    from mlctr import xla_cpu
    xla_cpu.configure_process()
    import jax
    import jax.numpy as jnp
    import optax
    from mlctr.models.layers.mlp import MLPBlock

    hyper = job["hyper"]
    tower = MLPBlock(tuple(hyper["dnn_hidden_units"]), hyper["net_dropout"],
                     hyper["batch_norm"], output_dim=1)
    key = jax.random.key(job["seed"])
    x = jax.random.normal(key, (BATCH_SIZE, job["width"]))
    y = jax.random.bernoulli(key, 0.5, (BATCH_SIZE,)).astype(jnp.float32)
    params = tower.init(key, x, train=False)["params"]
    optimizer = optax.chain(optax.clip_by_global_norm(hyper["grad_clip_norm"]),
                            optax.adam(hyper["learning_rate"]))

    def loss(params, dropout_key):
        logits = tower.apply({"params": params}, x, train=True,
                             rngs={"dropout": dropout_key})[:, 0]
        return optax.sigmoid_binary_cross_entropy(logits, y).mean()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, step):
        grads = jax.grad(loss)(params, jax.random.fold_in(key, step))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    state = [params, optimizer.init(params), 0]

    def step():
        state[0], state[1] = train_step(state[0], state[1], state[2])
        state[2] += 1
        jax.block_until_ready(state[0])

    return _tower_timing(step, job["steps"])


def mlctr_prepare(job: dict) -> dict:
    """mlctr's preprocessing of the raw file (the same bytes FuxiCTR's csv files hold)."""
    from mlctr import xla_cpu
    xla_cpu.configure_process()
    from mlctr.data.prepare import prepare

    start = time.perf_counter()
    prepare("criteo", job["raw"], job["out"], protocol="x4_001", seed=SPLIT_SEED,
            overwrite=True)
    return {"seconds": time.perf_counter() - start}


def mlctr_train(job: dict) -> dict:
    """One epoch of one model with mlctr's trainer, then its test AUC."""
    from mlctr import xla_cpu
    xla_cpu.configure_process()
    import ml_collections
    from mlctr.run import train
    from mlctr.configs import default

    start = time.perf_counter()
    hyper = job["hyper"]
    model = dict(embedding_dim=hyper["embedding_dim"],
                 dnn_hidden_units=tuple(hyper["dnn_hidden_units"]),
                 net_dropout=hyper["net_dropout"], batch_norm=hyper["batch_norm"],
                 embedding_regularizer=hyper["embedding_regularizer"],
                 net_regularizer=hyper["net_regularizer"])
    model.update({"deepfm": dict(model="deepfm"),
                  "dcn": dict(model="dcn", num_cross_layers=hyper["num_cross_layers"]),
                  "ipnn": dict(model="pnn", product_type="inner"),
                  "fibinet": dict(model="fibinet", reduction_ratio=hyper["reduction_ratio"],
                                  bilinear_type=hyper["bilinear_type"])}[job["model"]])
    config = default.get_config()
    with config.unlocked():
        config.models = ml_collections.ConfigDict({job["model"]: model})
    config.mode, config.peers, config.seed = "train", job["model"], job["seed"]
    config.mutual.alpha = 0.0
    config.data.dataset, config.data.data_dir = "criteo", job["data"]
    config.optimizer.learning_rate = hyper["learning_rate"]
    config.optimizer.grad_clip_norm = hyper["grad_clip_norm"]
    config.train.update(dict(batch_size=BATCH_SIZE, num_epochs=1, eval_steps=0,
                             test_at_end=True))
    config.checkpoint.ckpt_steps = 0
    results = train.train_and_evaluate(config, job["out"])
    return {"examples": results["steps"] * BATCH_SIZE, "train_seconds": results["train_seconds"],
            "examples_per_sec": results["examples_per_sec"],
            "test_auc": results["test"][job["model"]]["auc"],
            "test_logloss": results["test"][job["model"]]["logloss"],
            "wall_seconds": time.perf_counter() - start}


WORKERS = {f.__name__: f for f in (fuxictr_prepare, fuxictr_train, fuxictr_tower, mlctr_prepare,
                                   mlctr_train, mlctr_tower)}


# ---------------------------------------------------------------------------
# The driver.


class PeakMemory:
    """Peak summed PSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil
        self.root, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        import psutil
        while not self._stop.is_set():
            total = 0
            try:
                processes = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                return
            for process in processes:
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:
                    pass  # ended between the listing and the reading
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_worker(python: str, name: str, job: dict, logs: str, *,
               sample_memory: bool = False) -> dict:
    """Runs worker `name` in `python`; its result, plus what this process measured of it.

    `peak_bytes` is the sampled peak PSS of the worker and all its descendants, with
    `sample_memory` (else None): only for a worker that spreads over several processes
    (FuxiCTR's Ray), since reading /proc/<pid>/smaps_rollup ten times a second costs the
    sampler a quarter of a core and holds the worker's memory-map lock, which slows the
    worker it measures (a single process's peak is exactly `peak_rss_bytes`);
    `peak_rss_bytes` is the kernel's peak RSS of the largest single process among the
    worker and the descendants it waited for (`os.wait4`'s rusage: a floor that does not
    depend on sampling); `cpu_seconds` its user + system time with those descendants.
    Its output (FuxiCTR's Ray is verbose) goes to `logs`/<tag>.log.
    """
    os.makedirs(logs, exist_ok=True)
    tag = f"{name}_{job.get('model', 'data')}" + (f"_{job['seed']}" if "seed" in job else "")
    job_path = os.path.join(logs, f"{tag}.job.json")
    result_path = os.path.join(logs, f"{tag}.result.json")
    log_path = os.path.join(logs, f"{tag}.log")
    with open(job_path, "w") as f:
        json.dump({**job, "result": result_path}, f)
    env = {**os.environ, "PYTHONPATH": REPO}
    with open(log_path, "w") as log:
        process = subprocess.Popen([python, "-m", "experiments.benchmarks.vs_fuxictr",
                                    f"--worker={name}", f"--job={job_path}"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        memory = PeakMemory(process.pid) if sample_memory else None
        _, wait_status, usage = os.wait4(process.pid, 0)
        status = process.returncode = os.waitstatus_to_exitcode(wait_status)
        peak = memory.stop() if memory else None
    if status != 0:
        with open(log_path) as log:
            sys.stderr.write("".join(log.readlines()[-25:]))
        raise SystemExit(f"bench_vs_fuxictr: worker {name} ({python}) exited with {status}; "
                         f"its output: {log_path}")
    with open(result_path) as f:
        # ru_maxrss is in KiB on Linux.
        measured = {**json.load(f), "peak_bytes": peak, "peak_rss_bytes": usage.ru_maxrss * 1024,
                    "cpu_seconds": usage.ru_utime + usage.ru_stime}
    with open(result_path, "w") as f:  # a run cut short keeps what it measured
        json.dump(measured, f)
    return measured


def stage_files(rows: int, workdir: str) -> tuple[str, dict, int]:
    """The raw file (generated once per row count) and FuxiCTR's csv files of its split."""
    from mlctr.data import split as split_lib, synthetic

    raw_rows = -(-rows * 10 // 8)
    folder = os.path.join(workdir, f"rows_{rows}")
    raw = os.path.join(folder, "synthetic_criteo.txt")
    synthetic.generate(raw, num_rows=raw_rows, seed=SPLIT_SEED)
    csv = {s: os.path.join(folder, "csv", f"{s}.csv") for s in ("train", "valid", "test")}
    if not all(os.path.exists(p) for p in csv.values()):
        os.makedirs(os.path.dirname(csv["train"]), exist_ok=True)
        splits = split_lib.assign_splits(0, raw_rows, SPLIT_SEED)
        header = ",".join(["label"] + INT_COLUMNS + STR_COLUMNS) + "\n"
        files = [open(csv[s] + ".tmp", "w") for s in ("train", "valid", "test")]
        with open(raw) as source:
            for f in files:
                f.write(header)
            for line, split in zip(source, splits):
                files[split].write(line.replace("\t", ","))
        for f, s in zip(files, ("train", "valid", "test")):
            f.close()
            os.replace(csv[s] + ".tmp", csv[s])
    return raw, csv, raw_rows


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined when run, not on import: the tests import some benchmarks' functions
    # beside other modules' flags.
    flags.DEFINE_integer("rows", 1_000_000, "train rows")
    flags.DEFINE_string("models", "deepfm,dcn,ipnn",
                        f"some of {','.join(MODELS)} (FiBiNET: use fewer --rows)")
    flags.DEFINE_string("seeds", "2019,2020",
                        "training seeds; each library trains each model once per seed, so "
                        "the AUCs' run-to-run spread is measured, not assumed")
    flags.DEFINE_string("fuxictr_python", os.path.join(REPO, ".venv-fuxictr", "bin", "python"),
                        "the FuxiCTR environment's python")
    flags.DEFINE_string("workdir", os.path.join(REPO, "runs", "bench_vs_fuxictr"),
                        "the generated files are kept here between runs")
    flags.DEFINE_bool("tower_only", False,
                      "only the tower step of each model, set against the training results "
                      "an earlier run of the same --rows left in its logs")
    flags.DEFINE_enum("worker", None, sorted(WORKERS), "internal: the worker to run")
    flags.DEFINE_string("job", None, "internal: the worker's job file")


def main(argv):
    del argv
    args = types.SimpleNamespace(**FLAGS.flag_values_dict())
    if args.worker:
        with open(args.job) as f:
            job = json.load(f)
        result = WORKERS[args.worker](job)
        with open(job["result"], "w") as f:
            json.dump(result, f)
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; expected some of {list(MODELS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise app.UsageError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers")
    if not args.seeds:
        raise app.UsageError("--seeds: give at least one seed")
    if not os.path.exists(args.fuxictr_python):
        raise app.UsageError(f"--fuxictr_python: {args.fuxictr_python} does not exist; create the "
                     "environment as the module docstring says")
    compare(args, models)


def prepare_both(raw: str, csv: dict, raw_rows: int, out: dict, args, logs: str) -> dict:
    """Each library's preprocessing of the same rows: seconds, rows/s, peak bytes."""
    prep = {"mlctr": run_worker(sys.executable, "mlctr_prepare",
                                {"raw": raw, "out": os.path.join(out["mlctr"], "data")}, logs)}
    fuxi_data = os.path.join(out["fuxictr"], "data")
    shutil.rmtree(fuxi_data, ignore_errors=True)  # FuxiCTR would skip an existing one
    prep["fuxictr"] = run_worker(args.fuxictr_python, "fuxictr_prepare",
                                 {"csv": csv, "out": fuxi_data}, logs, sample_memory=True)
    for lib, p in prep.items():
        p["rows_per_sec"] = raw_rows / p["seconds"]
        sampled = (f"sampled PSS {p['peak_bytes'] / 2**30:.2f} GiB, "
                   if p["peak_bytes"] is not None else "")
        print(f"prepare {lib:8s} {p['seconds']:7.1f} s  {p['rows_per_sec']:10.0f} rows/s  "
              f"peak {_peak_bytes(p) / 2**30:.2f} GiB ({sampled}largest process "
              f"{p['peak_rss_bytes'] / 2**30:.2f} GiB)", flush=True)
    return prep


def train_both(name: str, mlctr_first: bool, out: dict, args, logs: str) -> dict:
    """One model trained by each library once per seed, alternating; the comparison."""
    jobs = {"mlctr": (sys.executable, "mlctr_train"),
            "fuxictr": (args.fuxictr_python, "fuxictr_train")}
    got = {"mlctr": [], "fuxictr": []}
    for k, seed in enumerate(args.seeds):
        first = mlctr_first if k % 2 == 0 else not mlctr_first
        for lib in ("mlctr", "fuxictr") if first else ("fuxictr", "mlctr"):
            python, worker = jobs[lib]
            run_dir = os.path.join(out[lib], f"run_{name}_{seed}")
            shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one
            result = run_worker(python, worker, {
                "data": os.path.join(out[lib], "data"), "out": run_dir, "model": name,
                "seed": seed, "hyper": HYPER}, logs)
            got[lib].append(result)
            print(f"train {name:7s} {lib:8s} seed {seed}  {result['examples_per_sec']:9.0f} "
                  f"examples/s  wall {result['wall_seconds']:6.1f} s  test AUC "
                  f"{result['test_auc']:.5f}", flush=True)
    comparison = training_comparison(got["mlctr"], got["fuxictr"])
    return {**comparison, **tower_comparison(name, comparison, args, logs)}


def tower_comparison(name: str, comparison: dict, args, logs: str) -> dict:
    """Each library's DNN tower alone against its whole training step (`*_tower` workers).

    The tower (forward, backward, Adam) is the bulk of a step's arithmetic, so
    `train_ratio_ceiling` (FuxiCTR's step time over mlctr's tower time) is the
    `train_ratio` mlctr would reach if its step cost no more than its tower;
    `*_step_over_tower` says how far each library's step is above its own tower.
    """
    width = tower_input_width(name, HYPER["embedding_dim"])
    job = {"model": name, "width": width, "seed": args.seeds[0], "hyper": HYPER,
           "steps": TOWER_STEPS}
    tower = {"mlctr": run_worker(sys.executable, "mlctr_tower", job, logs),
             "fuxictr": run_worker(args.fuxictr_python, "fuxictr_tower", job, logs)}
    out = {"tower_input_width": width}
    for lib, t in tower.items():
        step = BATCH_SIZE / comparison[f"{lib}_examples_per_sec"]
        out.update({f"{lib}_step_ms": 1e3 * step,
                    f"{lib}_tower_ms": 1e3 * t["tower_step_seconds"],
                    f"{lib}_step_over_tower": step / t["tower_step_seconds"]})
        print(f"tower {name:7s} {lib:8s} {width}-{'-'.join(map(str, HYPER['dnn_hidden_units']))}"
              f"-1  {1e3 * t['tower_step_seconds']:7.1f} ms per step (median of "
              f"{t['tower_steps']}); the whole step {1e3 * step:7.1f} ms", flush=True)
    out["train_ratio_ceiling"] = out["fuxictr_step_ms"] / out["mlctr_tower_ms"]
    return out


def training_comparison(mlctr_runs: list[dict], fuxictr_runs: list[dict]) -> dict:
    """Ratios and AUCs of one model from each library's runs (one per seed).

    Rates are averaged as total timed examples over total training seconds (mlctr's
    clock leaves its first step, the compilation, out of both). The AUC gap is
    mlctr's mean less FuxiCTR's; `fuxictr_auc_spread` is the max - min of FuxiCTR's
    own runs (0 with one seed: then nothing is known of its spread).
    """
    def rate(runs):
        return (sum(r["examples_per_sec"] * r["train_seconds"] for r in runs)
                / sum(r["train_seconds"] for r in runs))

    def mean(runs, key):
        return sum(r[key] for r in runs) / len(runs)

    def aucs(runs):
        return [r["test_auc"] for r in runs]

    m_rate, f_rate = rate(mlctr_runs), rate(fuxictr_runs)
    gap = mean(mlctr_runs, "test_auc") - mean(fuxictr_runs, "test_auc")
    spread = max(aucs(fuxictr_runs)) - min(aucs(fuxictr_runs))
    return {"train_ratio": m_rate / f_rate,
            "wall_ratio": mean(fuxictr_runs, "wall_seconds") / mean(mlctr_runs, "wall_seconds"),
            "mlctr_examples_per_sec": m_rate, "fuxictr_examples_per_sec": f_rate,
            "mlctr_wall_seconds": mean(mlctr_runs, "wall_seconds"),
            "fuxictr_wall_seconds": mean(fuxictr_runs, "wall_seconds"),
            "mlctr_test_auc": aucs(mlctr_runs), "fuxictr_test_auc": aucs(fuxictr_runs),
            "auc_gap": gap, "fuxictr_auc_spread": spread,
            "mlctr_auc_spread": max(aucs(mlctr_runs)) - min(aucs(mlctr_runs)),
            "auc_gap_within_fuxictr_spread": abs(gap) <= spread,
            "mlctr_test_logloss": [r["test_logloss"] for r in mlctr_runs],
            "fuxictr_test_logloss": [r["test_logloss"] for r in fuxictr_runs],
            "mlctr_train_examples": mlctr_runs[0]["examples"],
            "fuxictr_train_examples": fuxictr_runs[0]["examples"]}


def _peak_bytes(p: dict) -> int:
    """The larger of a worker's two peak-memory measurements (`run_worker`)."""
    return max(p["peak_bytes"] or 0, p["peak_rss_bytes"])


def summary(prep: dict, per_model: dict, **extra) -> dict:
    """The last JSON line: preprocessing ratios, the per-model comparisons, `extra`.

    A library's peak memory is the larger of its two measurements (`run_worker`), each a
    lower bound of the true peak: sampling can miss a short peak (a loaded machine slows
    the sampler), and the largest process alone leaves out the others.
    """
    m, f = prep["mlctr"], prep["fuxictr"]
    return {
        "prepare_ratio": m["rows_per_sec"] / f["rows_per_sec"],
        "peak_memory_ratio": _peak_bytes(m) / _peak_bytes(f),
        "peak_rss_ratio": m["peak_rss_bytes"] / f["peak_rss_bytes"],
        "prepare": {lib: {"seconds": p["seconds"], "rows_per_sec": p["rows_per_sec"],
                          "peak_gib": _peak_bytes(p) / 2**30,
                          "peak_pss_gib": (p["peak_bytes"] / 2**30
                                           if p["peak_bytes"] is not None else None),
                          "peak_rss_gib": p["peak_rss_bytes"] / 2**30,
                          "cpu_seconds": p["cpu_seconds"]} for lib, p in prep.items()},
        "models": per_model, **extra}


def _result(logs: str, tag: str) -> dict:
    """A worker's result file left by an earlier run; one line if it is missing."""
    path = os.path.join(logs, f"{tag}.result.json")
    if not os.path.exists(path):
        raise SystemExit(f"bench_vs_fuxictr: --tower_only needs {path}; run without "
                         "--tower_only first")
    with open(path) as f:
        return json.load(f)


def compare(args, models):
    """Stages the files, runs both libraries' preprocessing and training, prints the lines."""
    workdir = os.path.abspath(args.workdir)
    raw, csv, raw_rows = stage_files(args.rows, workdir)
    folder = os.path.join(workdir, f"rows_{args.rows}")
    out = {lib: os.path.join(folder, lib) for lib in ("mlctr", "fuxictr")}
    logs = os.path.join(folder, "logs")
    load_before = os.getloadavg()
    if args.tower_only:
        for name in models:
            comparison = training_comparison(*(
                [_result(logs, f"{lib}_train_{name}_{seed}") for seed in args.seeds]
                for lib in ("mlctr", "fuxictr")))
            print(json.dumps({name: {**comparison, **tower_comparison(name, comparison, args,
                                                                      logs)},
                              "load_average_before": list(load_before),
                              "load_average_after": list(os.getloadavg())}), flush=True)
        return
    prep = prepare_both(raw, csv, raw_rows, out, args, logs)
    per_model = {name: train_both(name, k % 2 == 0, out, args, logs)
                 for k, name in enumerate(models)}
    print(json.dumps(summary(
        prep, per_model, rows=args.rows, raw_rows=raw_rows, seeds=args.seeds,
        batch_size=BATCH_SIZE, hyper=HYPER, load_average_before=list(load_before),
        load_average_after=list(os.getloadavg()), cpu_count=os.cpu_count())))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
