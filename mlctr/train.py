"""train_and_evaluate(config, workdir): the one trainer for every mode.

Independent training, mutual learning from scratch, mutual finetuning and the
independent finetune control are all this loop with different configs:
`mutual.alpha = 0` makes the peers independent, `init_from` starts them from
a pretrained run's best weights.

Training protocol (BARS/FuxiCTR, each a config field): Adam; evaluation every
epoch or every `train.eval_steps`; after a non-improving evaluation a peer's
learning rate is multiplied by `optimizer.lr_decay_factor` (floor
`optimizer.min_learning_rate`); after `train.patience` non-improving
evaluations the peer stops: its best weights are restored into the live state
and its learning rate set to 0, so it keeps teaching its companions with its
best predictions while it no longer changes. The run ends when every peer has
stopped or the epochs run out; the best weights of each peer are evaluated.

Scale and restarts. The state and batches live on the `config.mesh` device mesh
(mlctr/sharding.py); in a multi-process run each process reads its slice of every
batch and evaluation gathers every example's predictions once. Checkpoints
(mlctr/checkpoint.py) are written every `checkpoint.ckpt_steps` updates, at the
end and on SIGTERM (then the run raises `Preempted`); the same command resumes
from the newest one and ends bitwise identical to an uninterrupted run on CPU. A
NaN/inf loss raises `NonFiniteLossError` before any later checkpoint is written.

Run directory: config.json, metrics.jsonl, tensorboard/ (event files),
checkpoints/, best/ (exported at the end), results.json and results.md.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import queue
import signal
import threading
import time
from typing import Any, Callable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlctr import checkpoint
from mlctr import metrics as metrics_lib
from mlctr import mutual
from mlctr import sharding
from mlctr import tensorboard


class NonFiniteLossError(FloatingPointError):
    """A peer's training loss became NaN or inf."""


class Preempted(Exception):
    """The run stopped on SIGTERM after saving a checkpoint; rerun the command to resume."""

    def __init__(self, step: int, directory: str):
        super().__init__(f"stopped on SIGTERM at step {step} after saving a checkpoint in "
                         f"{directory}; rerun the same command to resume")
        self.step = step


# ---------------------------------------------------------------------------
# Data.


def dataset_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the prepared dataset lives: config.data.data_dir or <workdir>/data."""
    return config.data.data_dir or os.path.join(workdir, "data")


def load_dataset(config: ml_collections.ConfigDict, workdir: str):
    """Opens the prepared dataset, preparing it first when it is not there yet.

    For `synthetic` the raw Criteo-format file is generated under the data dir;
    for `criteo`/`avazu` `config.data.raw` must name the Kaggle file. In a
    multi-process run process 0 prepares it and the others wait, so the data dir
    must be on storage every process sees (or prepared on every host beforehand).
    """
    from mlctr.data.prepare import prepare
    from mlctr.data.reader import PreparedDataset

    data_dir = dataset_dir(config, workdir)
    feature_map = os.path.join(data_dir, "feature_map.json")
    if jax.process_index() == 0 and not os.path.exists(feature_map):
        raw = config.data.raw
        if config.data.dataset == "synthetic":
            raw = raw or os.path.join(data_dir, "raw", "synthetic_criteo.txt")
        elif not raw:
            raise ValueError(f"config.data.raw must name the raw {config.data.dataset} file "
                             f"(no prepared dataset at {data_dir})")
        logging.info("Preparing %s dataset into %s", config.data.dataset, data_dir)
        prepare(
            config.data.dataset, raw, data_dir, protocol=config.data.protocol,
            skip_bad_rows=config.data.skip_bad_rows, seed=config.data.split_seed,
            num_rows=config.data.num_rows if config.data.dataset == "synthetic" else None)
    if jax.process_count() > 1:
        # Every process passes this barrier, whether or not it found the dataset.
        multihost_utils.sync_global_devices("mlctr: dataset ready")
    if not os.path.exists(feature_map):
        raise FileNotFoundError(
            f"process {jax.process_index()} finds no prepared dataset at {data_dir} after "
            "process 0 prepared it: put config.data.data_dir on storage all hosts share, or "
            "prepare it on every host first (python -m mlctr.data.prepare ...)")
    return PreparedDataset(data_dir)


def dataset_fingerprint(dataset) -> dict:
    """What a checkpoint must agree with to resume on this dataset."""
    return {"vocab_size": dataset.vocab_size, "num_fields": dataset.num_fields,
            "train_examples": dataset.num_examples("train"),
            "source_sha256": dataset.feature_map.get("source", {}).get("sha256")}


def prefetch(iterator: Iterator[dict], place: Callable[[dict], Any] = jax.device_put,
             size: int = 2) -> Iterator[dict]:
    """Reads and places batches in a background thread, overlapping the step.

    Args:
      iterator: host batches.
      place: turns a host batch into device arrays (e.g. `sharding.global_batch`).
      size: batches read ahead.
    """
    items: queue.Queue = queue.Queue(maxsize=size)
    sentinel = object()
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce():
        try:
            for batch in iterator:
                put(place(batch))
                if stop.is_set():
                    return
        except BaseException as e:  # surfaced in the consumer
            put(e)
        put(sentinel)

    threading.Thread(target=produce, daemon=True).start()
    try:
        while True:
            item = items.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer left early: let the reader thread end


# ---------------------------------------------------------------------------
# Per-peer early stopping and learning-rate decay.


@dataclasses.dataclass
class PeerSchedule:
    """BARS schedule, tracked separately for each peer.

    Attributes:
      learning_rate: current learning rate per peer.
      best_value: best monitored value per peer (-inf before the first eval).
      best_step: step of that best value.
      bad_evals: consecutive non-improving evaluations.
      stopped: whether the peer has early-stopped.
    """

    learning_rate: list[float]
    best_value: list[float]
    best_step: list[int]
    bad_evals: list[int]
    stopped: list[bool]

    @classmethod
    def start(cls, num_peers: int, learning_rate: float) -> "PeerSchedule":
        return cls([learning_rate] * num_peers, [-math.inf] * num_peers, [0] * num_peers,
                   [0] * num_peers, [False] * num_peers)

    def update(self, values: list[float], step: int, *, patience: int, decay: float,
               min_lr: float, min_delta: float = 1e-6) -> tuple[list[bool], list[bool]]:
        """Records one evaluation; returns (improved, newly_stopped) per peer."""
        improved, newly_stopped = [], []
        for k, value in enumerate(values):
            if self.stopped[k]:
                improved.append(False)
                newly_stopped.append(False)
                continue
            better = value > self.best_value[k] + min_delta
            improved.append(better)
            if better:
                self.best_value[k], self.best_step[k], self.bad_evals[k] = value, step, 0
            else:
                self.bad_evals[k] += 1
                self.learning_rate[k] = max(self.learning_rate[k] * decay, min_lr)
            stop = self.bad_evals[k] >= patience
            newly_stopped.append(stop)
            if stop:
                self.stopped[k] = True
        return improved, newly_stopped

    @property
    def all_stopped(self) -> bool:
        return all(self.stopped)

    def live_learning_rates(self) -> np.ndarray:
        return np.asarray([0.0 if s else lr for s, lr in zip(self.stopped, self.learning_rate)],
                          np.float32)

    def to_json(self) -> dict:
        return {k: [None if isinstance(v, float) and math.isinf(v) else v for v in vals]
                for k, vals in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "PeerSchedule":
        d = dict(d)
        d["best_value"] = [-math.inf if v is None else v for v in d["best_value"]]
        return cls(**d)


# ---------------------------------------------------------------------------
# Evaluation.


@functools.lru_cache(maxsize=16)
def _gathering_predict(predict_fn, mesh):
    """predict_fn over a global batch, returning (logits, labels, mask) on every process."""

    def predict(params, batch_stats, batch):
        return predict_fn(params, batch_stats, batch["ids"]), batch["label"], batch["mask"]

    return jax.jit(predict, out_shardings=sharding.replicated(mesh))


def predict_split(predict_fn, params, batch_stats, dataset, split: str, batch_size: int,
                  mesh=None):
    """Logits of every peer on a split: (logits [N, n], labels [n]), in split order.

    Each process reads only its slice of every evaluation batch; the logits of
    the whole batch come back to every process, and padding is dropped by the
    mask, so every example counts exactly once and all processes compute the
    same metrics (and so take the same early-stopping decisions).

    Args:
      predict_fn: from `build_run`.
      params, batch_stats: stacked peer variables (on `mesh`).
      dataset: the PreparedDataset.
      split: "valid" or "test".
      batch_size: global evaluation batch size (a multiple of the data axis).
      mesh: the device mesh; default: this process's first device.
    """
    mesh = mesh if mesh is not None else sharding.make_mesh(1, 1, jax.local_devices()[:1])
    index, count = sharding.process_batch_slice(mesh, batch_size)
    predict = _gathering_predict(predict_fn, mesh)
    all_logits, all_labels = [], []
    for local in dataset.eval_batches(split, batch_size, process_index=index, process_count=count):
        logits, labels, mask = jax.device_get(
            predict(params, batch_stats, sharding.global_batch(mesh, local, batch_size)))
        keep = mask > 0
        all_logits.append(logits[:, keep])
        all_labels.append(labels[keep])
    return np.concatenate(all_logits, axis=1), np.concatenate(all_labels)


def split_metrics(names, logits: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """AUC/logloss per peer and of the ensemble (mean of the peers' probabilities)."""
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    out = {name: metrics_lib.auc_and_logloss(labels, probs[k]) for k, name in enumerate(names)}
    if len(names) > 1:
        out["ensemble"] = metrics_lib.auc_and_logloss(labels, probs.mean(axis=0))
    return out


# ---------------------------------------------------------------------------
# Bookkeeping.


class MetricsWriter:
    """JSON lines in <workdir>/metrics.jsonl and TensorBoard scalars (process 0 only).

    A run that resumes at step k first drops the records after k that the
    interrupted process wrote, so the file reads as one uninterrupted run.
    """

    def __init__(self, workdir: str, start_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = jax.process_index() == 0
        self.tensorboard = None
        if not self.enabled:
            return
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [line for line in f if line.strip()
                        and json.loads(line).get("step", 0) <= start_step]
            with open(self.path + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(self.path + ".tmp", self.path)
        self.tensorboard = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                                     purge_step=start_step + 1)

    def write(self, record: dict, scalars: dict[str, float] | None = None):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if scalars:
            self.tensorboard.scalars(record["step"], scalars)
            self.tensorboard.flush()

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()


def _per_peer_scalars(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in values.items()}


def results_markdown(results: dict) -> str:
    """The final table of a run: each peer's best weights on valid (and test)."""
    splits = [s for s in ("valid", "test") if s in results]
    header = "| peer | " + " | ".join(f"{s} AUC | {s} logloss" for s in splits) + " |"
    lines = [header, "|---" * (1 + 2 * len(splits)) + "|"]
    for name in results[splits[0]]:
        cells = " | ".join(f"{results[s][name]['auc']:.5f} | {results[s][name]['logloss']:.5f}"
                           for s in splits)
        lines.append(f"| {name} | {cells} |")
    for split in splits:
        bayes = results.get("bayes", {}).get(split)
        if bayes:
            lines.append(f"\nBayes-optimal on this synthetic {split} split: AUC "
                         f"{bayes['auc']:.5f}, logloss {bayes['logloss']:.5f}.")
    lines.append(f"\n{results['steps']} steps; best step per peer: "
                 + ", ".join(f"{n} {s}" for n, s in zip(results["peers"],
                                                        results["schedule"]["best_step"])))
    return "\n".join(lines) + "\n"


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _select_tree(mask: np.ndarray, new, old):
    """Per peer (leading axis): new where mask, else old."""

    def pick(n, o):
        m = mask.reshape((-1,) + (1,) * (n.ndim - 1))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(pick, new, old)


def _select_groups(masks, new, old):
    """Group by group, `new` for the peers whose mask is set, else `old`."""
    return jax.tree_util.tree_map(
        lambda n, o: tuple(_select_tree(m, ng, og) for m, ng, og in zip(masks, n, o)),
        new, old, is_leaf=lambda x: isinstance(x, tuple))


def _group_masks(peers: mutual.Peers, per_peer: list[bool]):
    flags = np.asarray(per_peer, bool)
    return tuple(flags[sl] for sl in peers.group_slices())


def _raise_if_non_finite(names, non_finite, last_checkpoint: int | None):
    """Raises NonFiniteLossError naming each peer whose loss became NaN/inf, and when."""
    first_step, first_loss = jax.device_get(non_finite)
    bad = [k for k in range(len(names)) if first_step[k] >= 0]
    if bad:
        kept = (f"the last checkpoint, step {last_checkpoint}, is from before it and is kept"
                if last_checkpoint is not None else "no checkpoint was written")
        raise NonFiniteLossError(
            "; ".join(f"peer {names[k]!r} has a non-finite training loss ({first_loss[k]}) at "
                      f"step {first_step[k]}" for k in bad)
            + f". Stopping: nothing is saved from that step on ({kept}).")


class PreemptionWatcher:
    """Tells the loop when to checkpoint and stop after a SIGTERM (preemption notice).

    One process: a SIGTERM handler sets a flag that the loop reads after each
    step. Several processes: SIGTERM may reach them at different steps, so
    JAX's preemption service (started by jax.distributed.initialize, which then
    owns SIGTERM) agrees on one step at which every process saves and stops.
    """

    def __init__(self):
        self._multi_process = jax.process_count() > 1
        self._requested = False
        self._previous = None
        if not self._multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self._requested = True

    def should_stop(self, step: int) -> bool:
        if self._multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._requested

    def close(self):
        """Restores the previous handler: a later SIGTERM ends the process as usual."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


# ---------------------------------------------------------------------------
# The loop.


def build_run(config: ml_collections.ConfigDict, dataset, mesh=None):
    """Peers, optimizer and jitted functions for a config and dataset.

    On a peer-parallel `mesh`, `mutual.peer_execution = auto` means vmap
    (see `sharding.peer_execution`).
    """
    peer_execution = (config.mutual.peer_execution if mesh is None
                      else sharding.peer_execution(mesh, config.mutual.peer_execution))
    peers = mutual.build_peers(config.peers, config.models, vocab_size=dataset.vocab_size,
                               num_fields=dataset.num_fields, dtype=config.compute_dtype)
    optimizer = mutual.make_optimizer(config.optimizer.grad_clip_norm, config.optimizer.b1,
                                      config.optimizer.b2, config.optimizer.eps,
                                      config.optimizer.embedding_optimizer)
    train_step = mutual.make_train_step(
        peers, optimizer, alpha=config.mutual.alpha, divergence=config.mutual.divergence,
        stop_gradient=config.mutual.stop_gradient, warmup_steps=config.mutual.warmup_steps,
        peer_execution=peer_execution)
    predict_fn = mutual.make_predict_fn(peers, peer_execution=peer_execution)
    return peers, optimizer, train_step, predict_fn


def initial_state(config, peers, optimizer, dataset) -> dict:
    """Fresh peers, or the best weights of `config.init_from` (finetuning)."""
    # Jitted as a whole: one (cacheable) compilation instead of dozens of tiny
    # op-by-op ones for the optimizer states.
    sample_ids = jnp.zeros((2, dataset.num_fields), jnp.int32)
    state = jax.jit(lambda key: mutual.init_state(
        peers, key, sample_ids, optimizer, config.optimizer.learning_rate,
        same_init=config.mutual.same_init))(jax.random.PRNGKey(config.seed))
    if config.init_from:
        weights = checkpoint.load_peer_weights(config.init_from, list(peers.names))
        params, batch_stats = mutual.stack_peer_variables(peers, weights)
        state["params"] = jax.tree_util.tree_map(jnp.asarray, params)
        state["batch_stats"] = jax.tree_util.tree_map(jnp.asarray, batch_stats)
        state["opt_state"] = jax.jit(lambda params: tuple(
            jax.vmap(optimizer.init)(p) for p in params))(state["params"])
        logging.info("Initialised peers %s from %s", peers.names, config.init_from)
    return state


def sharded_train_step(train_step, mesh, state_shardings):
    """The one jitted step at explicit shardings, also recording non-finite losses.

    Args:
      train_step: from `mutual.make_train_step` (its `jitted(state, batch, alpha)`).
      mesh: the device mesh.
      state_shardings: from `sharding.state_shardings`.

    Returns:
      step(state, batch, alpha, non_finite) -> (state, measurements, non_finite),
      the state donated and kept at its shardings, the measurements replicated.
      non_finite = (first_step [N] int32, -1 while finite; loss [N] at that step),
      so the host learns which peer went NaN/inf first, and when, without a
      device-to-host transfer every step.
    """
    rep = sharding.replicated(mesh)

    def step(state, batch, alpha, non_finite):
        new_state, measurements = train_step.jitted(state, batch, alpha)
        first_step, first_loss = non_finite
        newly = (first_step < 0) & ~jnp.isfinite(measurements["loss"])
        non_finite = (jnp.where(newly, new_state["step"], first_step),
                      jnp.where(newly, measurements["loss"], first_loss))
        return new_state, measurements, non_finite

    return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh), rep, rep),
                   out_shardings=(state_shardings, rep, rep), donate_argnums=(0,))


def abstract_state(config, peers, optimizer, dataset):
    """Shapes and dtypes of the training state, without computing it."""
    return jax.eval_shape(lambda: mutual.init_state(
        peers, jax.random.PRNGKey(config.seed), jnp.zeros((2, dataset.num_fields), jnp.int32),
        optimizer, config.optimizer.learning_rate, same_init=config.mutual.same_init))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains all peers of `config` and evaluates their best weights.

    Resumes from the newest checkpoint in `workdir` when there is one.

    Args:
      config: a locked config (see mlctr/configs/default.py).
      workdir: run directory: config.json, metrics.jsonl, tensorboard/,
        checkpoints/, best/, results.json, results.md.

    Returns:
      results dict with per-peer 'valid' and 'test' metrics of the best
      weights, the schedule and throughput.

    Raises:
      NonFiniteLossError: a peer's loss became NaN or inf.
      Preempted: SIGTERM arrived; a checkpoint was saved.
      checkpoint.CheckpointError: the checkpoint in `workdir` is unreadable or
        belongs to another config.
    """
    os.makedirs(workdir, exist_ok=True)
    dataset = load_dataset(config, workdir)
    mesh = sharding.mesh_from_config(config.mesh)
    peers, optimizer, train_step, predict_fn = build_run(config, dataset, mesh=mesh)
    names = list(peers.names)
    logging.info("Peers: %s (groups: %s); mesh %s over %d process(es)", names,
                 [g.config_key for g in peers.groups], dict(mesh.shape), jax.process_count())
    tc = config.train
    steps_per_epoch = dataset.num_train_batches(tc.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"the train split ({dataset.num_examples('train')} rows) is smaller "
                         f"than one batch of {tc.batch_size}")
    total_steps = steps_per_epoch * tc.num_epochs
    if tc.max_steps > 0:
        total_steps = min(total_steps, tc.max_steps)
    train_slice = sharding.process_batch_slice(mesh, tc.batch_size)
    sharding.process_batch_slice(mesh, tc.eval_batch_size)  # fail early if it does not divide

    shapes = abstract_state(config, peers, optimizer, dataset)
    state_shardings = sharding.state_shardings(
        mesh, shapes, [g.size for g in peers.groups], [g.config_key for g in peers.groups])
    best_shardings = {k: state_shardings[k] for k in ("params", "batch_stats")}
    # What a checkpoint must agree with: the config, less the hyperparameter sets
    # of models that are not peers here (code updates may add fields to those).
    config_dict = json.loads(config.to_json_best_effort())
    config_dict["models"] = {key: config_dict["models"][key] for key in
                             dict.fromkeys(g.config_key for g in peers.groups)}
    fingerprint = dataset_fingerprint(dataset)
    checkpoints = checkpoint.RunCheckpoints(workdir, keep=config.checkpoint.keep)
    if checkpoints.latest_step() is not None:
        as_target = lambda tree, shardings: jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
        state, best, progress = checkpoints.restore(
            as_target(shapes, state_shardings),
            as_target({k: shapes[k] for k in best_shardings}, best_shardings),
            config=config_dict, dataset=fingerprint)
        schedule = PeerSchedule.from_json(progress["schedule"])
        start_step = int(progress["step"])
        logging.info("Resumed from the checkpoint at step %d (epoch %d, batch %d)", start_step,
                     *divmod(start_step, steps_per_epoch))
    else:
        host_state = jax.device_get(initial_state(config, peers, optimizer, dataset))
        schedule = PeerSchedule.start(peers.size, config.optimizer.learning_rate)
        frozen = [n.strip() for n in config.mutual.frozen_peers.split(",") if n.strip()]
        unknown = sorted(set(frozen) - set(names))
        if unknown:
            raise ValueError(f"mutual.frozen_peers names unknown peer(s) {unknown}; peers: {names}")
        for name in frozen:  # teachers of one-way distillation: never updated
            schedule.stopped[names.index(name)] = True
        host_state["learning_rate"] = schedule.live_learning_rates()
        state = sharding.put(host_state, state_shardings)
        # A separate copy: the live state's buffers are donated to the step.
        best = sharding.put({k: host_state[k] for k in best_shardings}, best_shardings)
        start_step = 0
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))

    rep = sharding.replicated(mesh)
    step_fn = sharded_train_step(train_step, mesh, state_shardings)
    select = jax.jit(_select_groups, out_shardings=best_shardings)
    alpha = sharding.put(np.float32(config.mutual.alpha), rep)
    non_finite = sharding.put((np.full(peers.size, -1, np.int32),
                               np.zeros(peers.size, np.float32)), rep)
    writer = MetricsWriter(workdir, start_step)
    watcher = PreemptionWatcher()

    def variables(tree):
        return {k: tree[k] for k in ("params", "batch_stats")}

    def evaluate_and_schedule(step: int, epoch: int):
        nonlocal state, best
        logits, labels = predict_split(predict_fn, state["params"], state["batch_stats"], dataset,
                                       "valid", tc.eval_batch_size, mesh)
        valid = split_metrics(names, logits, labels)
        values = [metrics_lib.monitor_value(valid[n], tc.monitor) for n in names]
        improved, newly_stopped = schedule.update(
            values, step, patience=tc.patience, decay=config.optimizer.lr_decay_factor,
            min_lr=config.optimizer.min_learning_rate)
        best = select(_group_masks(peers, improved), variables(state), best)
        if any(newly_stopped):
            # A stopped peer teaches with its best weights and no longer moves.
            state.update(select(_group_masks(peers, newly_stopped), best, variables(state)))
        state["learning_rate"] = sharding.put(schedule.live_learning_rates(),
                                              state_shardings["learning_rate"])
        writer.write({"kind": "eval", "step": step, "epoch": epoch, "valid": valid,
                      "learning_rate": dict(zip(names, schedule.learning_rate)),
                      "stopped": dict(zip(names, schedule.stopped))},
                     {**_per_peer_scalars("valid/auc", {n: m["auc"] for n, m in valid.items()}),
                      **_per_peer_scalars("valid/logloss",
                                          {n: m["logloss"] for n, m in valid.items()})})
        logging.info("step %d valid %s", step, "  ".join(
            f"{n}: auc {valid[n]['auc']:.5f} logloss {valid[n]['logloss']:.5f}"
            + (" *" if imp else "") + (" [stopped]" if schedule.stopped[k] else "")
            for k, (n, imp) in enumerate(zip(names, improved))))

    def save(step: int):
        # Never checkpoint a state that went through a non-finite step.
        _raise_if_non_finite(names, non_finite, checkpoints.last_saved_step)
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        checkpoints.save(step, state, best, {
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "schedule": schedule.to_json(), "peers": names, "config": config_dict,
            "dataset": fingerprint})

    step = start_step
    timed_steps, timed_seconds = 0, 0.0
    interval_start, interval_steps = None, 0  # None: the next step is not timed (compiles)
    try:
        while step < total_steps and not schedule.all_stopped:
            epoch, start_batch = divmod(step, steps_per_epoch)
            batches = dataset.train_batches(tc.batch_size, seed=config.seed, epoch=epoch,
                                            process_index=train_slice[0],
                                            process_count=train_slice[1],
                                            start_batch=start_batch)
            step_before = step
            for batch in prefetch(batches, functools.partial(sharding.global_batch, mesh,
                                                             batch_size=tc.batch_size)):
                state, measurements, non_finite = step_fn(state, batch, alpha, non_finite)
                step += 1
                if interval_start is None:
                    jax.block_until_ready(measurements)
                    interval_start, interval_steps = time.perf_counter(), 0
                else:
                    interval_steps += 1
                if step % tc.log_steps == 0 or step == total_steps:
                    _raise_if_non_finite(names, non_finite, checkpoints.last_saved_step)
                    m = jax.device_get(measurements)
                    elapsed = time.perf_counter() - interval_start
                    timed_steps, timed_seconds = timed_steps + interval_steps, timed_seconds + elapsed
                    steps_per_sec = interval_steps / max(elapsed, 1e-9)
                    interval_start, interval_steps = time.perf_counter(), 0
                    record = {"kind": "train", "step": step, "epoch": epoch,
                              "steps_per_sec": steps_per_sec,
                              "examples_per_sec": steps_per_sec * tc.batch_size,
                              "learning_rate": dict(zip(names, schedule.live_learning_rates().tolist())),
                              **{k: dict(zip(names, np.asarray(m[k]).tolist()))
                                 for k in ("loss", "bce", "mutual", "l2", "grad_norm")}}
                    scalars = {f"train/{k}/{n}": v for k in ("loss", "bce", "mutual", "grad_norm",
                                                             "learning_rate")
                               for n, v in record[k].items()}
                    scalars.update({"train/steps_per_sec": steps_per_sec,
                                    "train/examples_per_sec": record["examples_per_sec"]})
                    writer.write(record, scalars)
                    logging.info("step %d/%d (%.2f steps/s, %.0f examples/s, ETA %s) loss %s",
                                 step, total_steps, steps_per_sec, record["examples_per_sec"],
                                 _format_seconds((total_steps - step) / max(steps_per_sec, 1e-9)),
                                 np.round(np.asarray(m["loss"]), 5).tolist())
                end_of_epoch = step % steps_per_epoch == 0
                if (tc.eval_steps > 0 and step % tc.eval_steps == 0) or (
                        tc.eval_steps <= 0 and end_of_epoch) or step == total_steps:
                    _raise_if_non_finite(names, non_finite, checkpoints.last_saved_step)
                    evaluate_and_schedule(step, epoch)
                    interval_start = time.perf_counter()  # evaluation is not training time
                if step >= total_steps or schedule.all_stopped:
                    break
                if config.checkpoint.ckpt_steps > 0 and step % config.checkpoint.ckpt_steps == 0:
                    save(step)
                if watcher.should_stop(step):
                    if checkpoints.last_saved_step != step:
                        save(step)
                    checkpoints.wait()
                    logging.warning("SIGTERM: saved the checkpoint at step %d; stopping", step)
                    raise Preempted(step, checkpoints.directory)
                if end_of_epoch:
                    break
            if step == step_before:
                raise RuntimeError(f"epoch {epoch} yielded no training batch from batch {start_batch}")
        _raise_if_non_finite(names, non_finite, checkpoints.last_saved_step)
        if checkpoints.last_saved_step != step:
            save(step)
        checkpoints.wait()
    finally:
        watcher.close()
        writer.close()
        checkpoints.close()  # waits for a save in flight: earlier checkpoints are good

    results = {"peers": names, "steps": step, "resumed_from": start_step or None,
               "train_seconds": timed_seconds,
               "examples_per_sec": timed_steps * tc.batch_size / max(timed_seconds, 1e-9),
               "schedule": schedule.to_json()}
    for split in ("valid", "test") if tc.test_at_end else ("valid",):
        logits, labels = predict_split(predict_fn, best["params"], best["batch_stats"], dataset,
                                       split, tc.eval_batch_size, mesh)
        results[split] = split_metrics(names, logits, labels)
    bayes = dataset.feature_map.get("bayes")
    if bayes:
        results["bayes"] = bayes
    checkpoint.save_peer_weights(
        workdir, mutual.peer_variables(peers, *sharding.to_host((best["params"], best["batch_stats"]))))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(results_markdown(results))
    return results
