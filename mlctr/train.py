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
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import time
from typing import Any, Iterator

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mlctr import checkpoint
from mlctr import metrics as metrics_lib
from mlctr import mutual


class NonFiniteLossError(FloatingPointError):
    """A peer's training loss became NaN or inf."""


# ---------------------------------------------------------------------------
# Data.


def dataset_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the prepared dataset lives: config.data.data_dir or <workdir>/data."""
    return config.data.data_dir or os.path.join(workdir, "data")


def load_dataset(config: ml_collections.ConfigDict, workdir: str):
    """Opens the prepared dataset, preparing it first when it is not there yet.

    For `synthetic` the raw Criteo-format file is generated under the data dir;
    for `criteo`/`avazu` `config.data.raw` must name the Kaggle file.
    """
    from mlctr.data.prepare import prepare
    from mlctr.data.reader import PreparedDataset

    data_dir = dataset_dir(config, workdir)
    if not os.path.exists(os.path.join(data_dir, "feature_map.json")):
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
    return PreparedDataset(data_dir)


def prefetch(iterator: Iterator[dict], size: int = 2) -> Iterator[dict]:
    """Reads and transfers batches in a background thread, overlapping the step."""
    items: queue.Queue = queue.Queue(maxsize=size)
    sentinel = object()

    def produce():
        try:
            for batch in iterator:
                items.put(jax.device_put(batch))
        except BaseException as e:  # surfaced in the consumer
            items.put(e)
        items.put(sentinel)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = items.get()
        if item is sentinel:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


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


def predict_split(predict_fn, params, batch_stats, dataset, split: str, batch_size: int):
    """Logits of every peer on a split: (logits [N, n], labels [n])."""
    all_logits, all_labels = [], []
    for batch in dataset.eval_batches(split, batch_size):
        logits = np.asarray(predict_fn(params, batch_stats, jnp.asarray(batch["ids"])))
        keep = batch["mask"] > 0
        all_logits.append(logits[:, keep])
        all_labels.append(batch["label"][keep])
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
    """Appends JSON lines to <workdir>/metrics.jsonl (process 0 only)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = jax.process_index() == 0

    def write(self, record: dict):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _select_tree(mask: np.ndarray, new, old):
    """Per peer (leading axis): new where mask, else old."""

    def pick(n, o):
        m = mask.reshape((-1,) + (1,) * (n.ndim - 1))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(pick, new, old)


@jax.jit
def _select_groups(masks, new, old):
    return tuple(_select_tree(m, n, o) for m, n, o in zip(masks, new, old))


def _group_masks(peers: mutual.Peers, per_peer: list[bool]):
    flags = np.asarray(per_peer, bool)
    return tuple(jnp.asarray(flags[sl]) for sl in peers.group_slices())


def _check_finite(names, step: int, measurements: dict):
    loss = np.asarray(measurements["loss"])
    for k, name in enumerate(names):
        if not np.isfinite(loss[k]):
            raise NonFiniteLossError(
                f"peer {name!r} has a non-finite training loss ({loss[k]}) at step {step}; "
                "stopping (the last good checkpoint is kept)")


# ---------------------------------------------------------------------------
# The loop.


def build_run(config: ml_collections.ConfigDict, dataset):
    """Peers, optimizer and jitted functions for a config and dataset."""
    peers = mutual.build_peers(config.peers, config.models, vocab_size=dataset.vocab_size,
                               num_fields=dataset.num_fields)
    optimizer = mutual.make_optimizer(config.optimizer.grad_clip_norm, config.optimizer.b1,
                                      config.optimizer.b2, config.optimizer.eps)
    train_step = mutual.make_train_step(
        peers, optimizer, alpha=config.mutual.alpha, divergence=config.mutual.divergence,
        stop_gradient=config.mutual.stop_gradient, warmup_steps=config.mutual.warmup_steps,
        peer_execution=config.mutual.peer_execution)
    predict_fn = mutual.make_predict_fn(peers, peer_execution=config.mutual.peer_execution)
    return peers, optimizer, train_step, predict_fn


def initial_state(config, peers, optimizer, dataset) -> dict:
    """Fresh peers, or the best weights of `config.init_from` (finetuning)."""
    sample_ids = jnp.zeros((2, dataset.num_fields), jnp.int32)
    state = mutual.init_state(peers, jax.random.PRNGKey(config.seed), sample_ids, optimizer,
                              config.optimizer.learning_rate, same_init=config.mutual.same_init)
    if config.init_from:
        weights = checkpoint.load_peer_weights(config.init_from, list(peers.names))
        params, batch_stats = mutual.stack_peer_variables(peers, weights)
        state["params"] = jax.tree_util.tree_map(jnp.asarray, params)
        state["batch_stats"] = jax.tree_util.tree_map(jnp.asarray, batch_stats)
        state["opt_state"] = tuple(jax.vmap(optimizer.init)(p) for p in state["params"])
        logging.info("Initialised peers %s from %s", peers.names, config.init_from)
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains all peers of `config` and evaluates their best weights.

    Args:
      config: a locked config (see mlctr/configs/default.py).
      workdir: run directory: config.json, metrics.jsonl, checkpoints/, best/,
        results.json.

    Returns:
      results dict with per-peer 'valid' and 'test' metrics of the best
      weights, the schedule and throughput.
    """
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=1))
    dataset = load_dataset(config, workdir)
    peers, optimizer, train_step, predict_fn = build_run(config, dataset)
    names = list(peers.names)
    logging.info("Peers: %s (groups: %s)", names, [g.config_key for g in peers.groups])

    state = initial_state(config, peers, optimizer, dataset)
    schedule = PeerSchedule.start(peers.size, config.optimizer.learning_rate)
    frozen = [n.strip() for n in config.mutual.frozen_peers.split(",") if n.strip()]
    unknown = sorted(set(frozen) - set(names))
    if unknown:
        raise ValueError(f"mutual.frozen_peers names unknown peer(s) {unknown}; peers: {names}")
    for name in frozen:  # teachers of one-way distillation: never updated
        schedule.stopped[names.index(name)] = True
    state["learning_rate"] = jnp.asarray(schedule.live_learning_rates())
    tc = config.train
    steps_per_epoch = dataset.num_train_batches(tc.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"the train split ({dataset.num_examples('train')} rows) is smaller "
                         f"than one batch of {tc.batch_size}")
    total_steps = steps_per_epoch * tc.num_epochs
    if tc.max_steps > 0:
        total_steps = min(total_steps, tc.max_steps)

    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, checkpoint.CHECKPOINT_DIR)),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        item_names=("state", "progress"))
    start_step = 0
    if manager.latest_step() is not None:
        restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(jax.tree_util.tree_map(np.zeros_like, jax.device_get(state))),
            progress=ocp.args.JsonRestore()))
        state = jax.tree_util.tree_map(jnp.asarray, restored["state"])
        schedule = PeerSchedule.from_json(restored["progress"]["schedule"])
        start_step = int(state["step"])
        logging.info("Resumed from step %d", start_step)
        best_params, best_stats = jax.tree_util.tree_map(jnp.asarray, mutual.stack_peer_variables(
            peers, checkpoint.load_peer_weights(workdir, names)))
    else:
        # Copies: the live state's buffers are donated to the step.
        best_params, best_stats = jax.tree_util.tree_map(
            jnp.copy, (state["params"], state["batch_stats"]))
    writer = MetricsWriter(workdir)

    def evaluate_and_schedule(step: int, epoch: int):
        nonlocal state, best_params, best_stats
        logits, labels = predict_split(predict_fn, state["params"], state["batch_stats"], dataset,
                                       "valid", tc.eval_batch_size)
        valid = split_metrics(names, logits, labels)
        values = [metrics_lib.monitor_value(valid[n], tc.monitor) for n in names]
        improved, newly_stopped = schedule.update(
            values, step, patience=tc.patience, decay=config.optimizer.lr_decay_factor,
            min_lr=config.optimizer.min_learning_rate)
        best_params = _select_groups(_group_masks(peers, improved), state["params"], best_params)
        best_stats = _select_groups(_group_masks(peers, improved), state["batch_stats"], best_stats)
        if any(newly_stopped):
            # A stopped peer teaches with its best weights and no longer moves.
            masks = _group_masks(peers, newly_stopped)
            state["params"] = _select_groups(masks, best_params, state["params"])
            state["batch_stats"] = _select_groups(masks, best_stats, state["batch_stats"])
        state["learning_rate"] = jnp.asarray(schedule.live_learning_rates())
        writer.write({"kind": "eval", "step": step, "epoch": epoch, "valid": valid,
                      "learning_rate": dict(zip(names, schedule.learning_rate)),
                      "stopped": dict(zip(names, schedule.stopped))})
        logging.info("step %d valid %s", step, "  ".join(
            f"{n}: auc {valid[n]['auc']:.5f} logloss {valid[n]['logloss']:.5f}"
            + (" *" if imp else "") + (" [stopped]" if schedule.stopped[k] else "")
            for k, (n, imp) in enumerate(zip(names, improved))))

    step = start_step
    train_start, timed_steps = time.perf_counter(), 0
    last_measurements = None
    while step < total_steps and not schedule.all_stopped:
        epoch, start_batch = divmod(step, steps_per_epoch)
        batches = dataset.train_batches(tc.batch_size, seed=config.seed, epoch=epoch,
                                        start_batch=start_batch)
        step_before = step
        for batch in prefetch(batches):
            state, measurements = train_step(state, batch)
            step += 1
            if timed_steps == 0 and step == step_before + 1 and step == start_step + 1:
                # Exclude compilation from the throughput.
                jax.block_until_ready(measurements)
                train_start = time.perf_counter()
            else:
                timed_steps += 1
            last_measurements = measurements
            if step % tc.log_steps == 0 or step == total_steps:
                m = jax.device_get(measurements)
                _check_finite(names, step, m)
                elapsed = time.perf_counter() - train_start
                rate = timed_steps * tc.batch_size / max(elapsed, 1e-9)
                eta = (total_steps - step) * tc.batch_size / max(rate, 1e-9)
                writer.write({"kind": "train", "step": step, "epoch": epoch,
                              "examples_per_sec": rate,
                              **{k: dict(zip(names, np.asarray(m[k]).tolist()))
                                 for k in ("loss", "bce", "mutual", "l2", "grad_norm")}})
                logging.info("step %d/%d (%.0f examples/s, ETA %.0fs) loss %s", step, total_steps,
                             rate, eta, np.round(np.asarray(m["loss"]), 5).tolist())
            end_of_epoch = step % steps_per_epoch == 0
            if (tc.eval_steps > 0 and step % tc.eval_steps == 0) or (
                    tc.eval_steps <= 0 and end_of_epoch) or step == total_steps:
                _check_finite(names, step, jax.device_get(measurements))
                evaluate_and_schedule(step, epoch)
                manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    progress=ocp.args.JsonSave({"schedule": schedule.to_json(), "step": step})))
                checkpoint.save_peer_weights(
                    workdir, mutual.peer_variables(peers, best_params, best_stats))
            if step >= total_steps or schedule.all_stopped or end_of_epoch:
                break
        if step == step_before:
            raise RuntimeError(f"epoch {epoch} yielded no training batch from batch {start_batch}")
    manager.wait_until_finished()
    train_seconds = time.perf_counter() - train_start
    if last_measurements is not None:
        _check_finite(names, step, jax.device_get(last_measurements))

    results = {"peers": names, "steps": step, "train_seconds": train_seconds,
               "examples_per_sec": timed_steps * tc.batch_size / max(train_seconds, 1e-9),
               "schedule": schedule.to_json()}
    for split in ("valid", "test") if tc.test_at_end else ("valid",):
        logits, labels = predict_split(predict_fn, best_params, best_stats, dataset, split,
                                       tc.eval_batch_size)
        results[split] = split_metrics(names, logits, labels)
    bayes = dataset.feature_map.get("bayes")
    if bayes:
        results["bayes"] = bayes
    checkpoint.save_peer_weights(workdir, mutual.peer_variables(peers, best_params, best_stats))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    return results
