"""train_and_evaluate(config, workdir): the one trainer for every mode.

Independent training, mutual learning from scratch, mutual finetuning and the
independent finetune control are all this loop with different configs:
`mutual.alpha = 0` makes the peers independent, `init_from` starts them from
a pretrained run's best weights.

The trainer reads top down: `train_and_evaluate` checks the config and work dir and
locks it, then `build` (dataset, peers, shapes), `restore_or_start` (the newest
checkpoint or fresh peers), `TrainLoop.run` (step, log, evaluate, checkpoint, early
stop) and `test_and_export` (the best weights on valid and test). The dataset must be
prepared before (`ensure_prepared`, which `mlctr.main` calls).

Training protocol (BARS/FuxiCTR, each a config field): Adam; evaluation every
epoch or every `train.eval_steps`; per-peer learning-rate decay and early stopping
(mlctr/run/schedule.py). A stopped peer's best weights are restored into the live state
and its learning rate set to 0, so it keeps teaching its companions with its best
predictions while it no longer changes. The run ends when every peer has stopped or
the epochs run out; the best weights of each peer are evaluated.

Scale and restarts. The state and batches live on the `config.mesh` device mesh
(mlctr/sharding.py); in a multi-process run each process reads its slice of every
batch (of a per-process dataset such as hash-mode criteo_1tb: from its own train rows,
every process stopping at the smallest shard's steps per epoch; mlctr/run/inputs.py) and
evaluation gathers every example's predictions once. Checkpoints
(mlctr/run/checkpoint.py) are written every `checkpoint.ckpt_steps` updates, at the
end and on SIGTERM (then the run raises `Preempted`); the same command resumes
from the newest one and ends bitwise identical to an uninterrupted run on CPU. A
NaN/inf loss raises `NonFiniteLossError` before any later checkpoint is written.

Run directory: .lock, config.json, dataset.json, metrics.jsonl, tensorboard/ (event
files), checkpoints/, best/ (exported at the end), results.json and results.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import threading
from typing import Any, Callable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mlctr.run import checkpoint
from mlctr import locking
from mlctr import metrics as metrics_lib
from mlctr import mutual
from mlctr.run import logs
from mlctr import sharding
from mlctr.configs import validate as config_validation
from mlctr.run import errors
from mlctr.run import evaluation
from mlctr.run import inputs
from mlctr.run.schedule import PeerSchedule


# ---------------------------------------------------------------------------
# Peers and the jitted step.


def build_run(config: ml_collections.ConfigDict, dataset, mesh=None):
    """Peers, optimizer and the jitted predict function for a config and dataset.

    On a peer-parallel `mesh`, `mutual.peer_execution = auto` means vmap
    (see `sharding.peer_execution`).
    """
    peers = mutual.build_peers(config.peers, config.models, vocab_size=dataset.vocab_size,
                               num_fields=dataset.num_fields, dtype=config.compute_dtype,
                               table_row_multiple=sharding.table_row_multiple(mesh),
                               qr_layout=mutual.qr_layout(config, dataset))
    optimizer = mutual.make_optimizer(config.optimizer.grad_clip_norm, config.optimizer.b1,
                                      config.optimizer.b2, config.optimizer.eps,
                                      config.optimizer.embedding_optimizer)
    predict_fn = mutual.make_predict_fn(peers, peer_execution=_peer_execution(config, mesh))
    return peers, optimizer, predict_fn


def make_step(config: ml_collections.ConfigDict, peers, optimizer, mesh=None,
              state_shardings=None):
    """The run's one jitted train step (`mutual.make_train_step`) with the config's mutual
    options, at the state's shardings on `mesh`."""
    return mutual.make_train_step(
        peers, optimizer, divergence=config.mutual.divergence,
        transfer=config.mutual.transfer,
        stop_gradient=config.mutual.stop_gradient, warmup_steps=config.mutual.warmup_steps,
        peer_execution=_peer_execution(config, mesh), mesh=mesh,
        state_shardings=state_shardings)


def _peer_execution(config, mesh) -> str:
    return (config.mutual.peer_execution if mesh is None
            else sharding.peer_execution(mesh, config.mutual.peer_execution))


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


def abstract_state(config, peers, optimizer, dataset):
    """Shapes and dtypes of the training state, without computing it."""
    return jax.eval_shape(lambda: mutual.init_state(
        peers, jax.random.PRNGKey(config.seed), jnp.zeros((2, dataset.num_fields), jnp.int32),
        optimizer, config.optimizer.learning_rate, same_init=config.mutual.same_init))


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
        raise errors.NonFiniteLossError(
            "; ".join(f"peer {names[k]!r} has a non-finite training loss ({first_loss[k]}) at "
                      f"step {first_step[k]}" for k in bad)
            + f". Stopping: nothing is saved from that step on ({kept}).")


def _variables(tree) -> dict:
    return {k: tree[k] for k in ("params", "batch_stats")}


# ---------------------------------------------------------------------------
# Start: config, work dir, lock.


def check_can_start(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Fails with one line before anything is written: a bad config or work dir.

    Raises:
      ValueError: `config.<key>: ...` for a nonsense setting.
      RunError: the work dir is a file or cannot be created.
    """
    config_validation.validate(config)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise errors.RunError(f"the work dir {workdir} is a file, not a directory: pass another "
                       "--workdir")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise errors.RunError(f"cannot create the work dir {workdir}: {e.strerror}") from None


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Holds the work dir's lock for the run (process 0 takes it for all processes).

    Raises:
      mlctr.locking.LockedError: another run holds the work dir; on every process.
    """
    with contextlib.ExitStack() as stack:
        message = ""
        if jax.process_index() == 0:
            try:
                stack.enter_context(locking.exclusive_lock(workdir, "run"))
            except locking.LockedError as e:
                message = str(e)
        if jax.process_count() > 1:
            # Every process learns whether process 0 holds the lock, and waits for it.
            busy = multihost_utils.broadcast_one_to_all(np.int32(bool(message)))
            if busy and not message:
                message = f"{workdir} is in use by another run (process 0 could not lock it)"
        if message:
            raise locking.LockedError(message)
        yield


# ---------------------------------------------------------------------------
# Build: dataset, peers, shapes and shardings.


@dataclasses.dataclass
class Run:
    """What a run is made of; fixed once built."""

    config: ml_collections.ConfigDict
    workdir: str
    dataset: Any
    mesh: Any
    peers: mutual.Peers
    optimizer: Any
    train_step: Any
    predict_fn: Callable
    steps_per_epoch: int
    total_steps: int
    shapes: dict
    state_shardings: dict
    # What a checkpoint must agree with: the config (as a dict) and the dataset.
    config_dict: dict
    fingerprint: dict

    @property
    def names(self) -> list[str]:
        return list(self.peers.names)

    @property
    def best_shardings(self) -> dict:
        return _variables(self.state_shardings)


def run_length(train_config, dataset) -> tuple[int, int]:
    """(steps per epoch, total steps) of a run on `dataset`."""
    if train_config.batch_size < 1:
        raise errors.RunError("config.train.batch_size must be >= 1 (got "
                              f"{train_config.batch_size})")
    steps_per_epoch = dataset.num_train_batches(train_config.batch_size)
    if steps_per_epoch == 0:
        raise errors.RunError(f"the train split of {dataset.data_dir} "
                              f"({dataset.num_examples('train')} rows) is smaller than one "
                              f"batch (config.train.batch_size = {train_config.batch_size})")
    total_steps = steps_per_epoch * train_config.num_epochs
    if train_config.max_steps > 0:
        total_steps = min(total_steps, train_config.max_steps)
    return steps_per_epoch, total_steps


def _checkpoint_config(config: ml_collections.ConfigDict, peers: mutual.Peers) -> dict:
    """The config as a checkpoint records it, less the hyperparameter sets of models
    that are not peers here (code updates may add fields to those)."""
    config_dict = json.loads(config.to_json_best_effort())
    config_dict["models"] = {key: config_dict["models"][key] for key in
                             dict.fromkeys(g.config_key for g in peers.groups)}
    return config_dict


def build(config: ml_collections.ConfigDict, workdir: str) -> Run:
    """Opens the dataset and builds the peers, the step and the state's layout."""
    dataset = inputs.open_run_dataset(config, workdir)
    mesh = sharding.mesh_from_config(config.mesh)
    peers, optimizer, predict_fn = build_run(config, dataset, mesh=mesh)
    logging.info("Peers: %s (groups: %s); mesh %s over %d process(es)", list(peers.names),
                 [g.config_key for g in peers.groups], dict(mesh.shape), jax.process_count())
    # Fail early when a batch does not divide over the processes.
    inputs.check_batch_slices(dataset, mesh, config.train.batch_size)
    sharding.process_batch_slice(mesh, config.train.eval_batch_size)
    steps_per_epoch, total_steps = run_length(config.train, dataset)
    shapes = abstract_state(config, peers, optimizer, dataset)
    state_shardings = sharding.state_shardings(
        mesh, shapes, [g.size for g in peers.groups], [g.config_key for g in peers.groups])
    train_step = make_step(config, peers, optimizer, mesh, state_shardings)
    return Run(config, workdir, dataset, mesh, peers, optimizer, train_step, predict_fn,
               steps_per_epoch, total_steps, shapes, state_shardings,
               _checkpoint_config(config, peers), inputs.dataset_fingerprint(dataset))


# ---------------------------------------------------------------------------
# Restore: the newest checkpoint, or fresh peers.


@dataclasses.dataclass
class Live:
    """What changes as the run trains: the state, the best weights, the schedule."""

    state: dict
    best: dict
    schedule: PeerSchedule
    step: int
    start_step: int


def restore_or_start(run: Run, checkpoints: checkpoint.RunCheckpoints) -> Live:
    """Resumes from the newest checkpoint in the work dir, else starts fresh peers."""
    if checkpoints.latest_step() is None:
        return _start(run)
    as_target = lambda tree, shardings: jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
    state, best, progress = checkpoints.restore(
        as_target(run.shapes, run.state_shardings),
        as_target(_variables(run.shapes), run.best_shardings),
        config=run.config_dict, dataset=run.fingerprint, table_rows=run.peers.vocab_size)
    start_step = int(progress["step"])
    logging.info("Resumed from the checkpoint at step %d (epoch %d, batch %d)", start_step,
                 *divmod(start_step, run.steps_per_epoch))
    return Live(state, best, PeerSchedule.from_json(progress["schedule"]), start_step,
                start_step)


def _start(run: Run) -> Live:
    config, names = run.config, run.names
    host_state = jax.device_get(initial_state(config, run.peers, run.optimizer, run.dataset))
    schedule = PeerSchedule.start(run.peers.size, config.optimizer.learning_rate)
    frozen = [n.strip() for n in config.mutual.frozen_peers.split(",") if n.strip()]
    unknown = sorted(set(frozen) - set(names))
    if unknown:
        raise ValueError(f"mutual.frozen_peers names unknown peer(s) {unknown}; peers: {names}")
    for name in frozen:  # teachers of one-way distillation: never updated
        schedule.stopped[names.index(name)] = True
    host_state["learning_rate"] = schedule.live_learning_rates()
    state = sharding.put(host_state, run.state_shardings)
    # A separate copy: the live state's buffers are donated to the step.
    best = sharding.put(_variables(host_state), run.best_shardings)
    return Live(state, best, schedule, 0, 0)


def write_run_files(run: Run) -> None:
    """config.json and dataset.json (process 0)."""
    if jax.process_index() == 0:
        with open(os.path.join(run.workdir, "config.json"), "w") as f:
            f.write(run.config.to_json_best_effort(indent=1))
    inputs.write_dataset_record(run.workdir, run.config.data.dataset, run.fingerprint)


# ---------------------------------------------------------------------------
# The loop: step, log, evaluate, checkpoint, early stop.


class PreemptionWatcher:
    """Tells the loop when to checkpoint and stop after a SIGTERM (preemption notice).

    Several processes: SIGTERM may reach them at different steps, so JAX's
    preemption service (started by jax.distributed.initialize, which then owns
    SIGTERM) agrees on one step at which every process saves and stops; orbax's
    `CheckpointManager.reached_preemption` asks it. One process: that service does
    not run (orbax's call then always answers False), so a SIGTERM handler of our
    own sets a flag that the loop reads after each step.

    Args:
      reached_preemption: step -> bool, the multi-process sync point; by default
        orbax's (what `CheckpointManager.reached_preemption` calls).
    """

    def __init__(self, reached_preemption: Callable[[int], bool] | None = None):
        self._multi_process = jax.process_count() > 1
        self._reached_preemption = reached_preemption or ocp.multihost.reached_preemption
        self._requested = False
        self._previous = None
        if not self._multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self._requested = True

    def should_stop(self, step: int) -> bool:
        if self._multi_process:
            return self._reached_preemption(step)
        return self._requested

    def close(self):
        """Restores the previous handler: a later SIGTERM ends the process as usual."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class TrainLoop:
    """The steps of one run, from `live.step` to the end; updates `live` in place.

    Args:
      run: from `build`.
      live: from `restore_or_start`.
      checkpoints: the run's checkpoints (written every `checkpoint.ckpt_steps`, on
        SIGTERM and at the end).
    """

    def __init__(self, run: Run, live: Live, checkpoints: checkpoint.RunCheckpoints):
        self.run, self.live, self.checkpoints = run, live, checkpoints
        rep = sharding.replicated(run.mesh)
        self.select = jax.jit(_select_groups, out_shardings=run.best_shardings)
        self.alpha = sharding.put(np.float32(run.config.mutual.alpha), rep)
        self.non_finite = sharding.put(mutual.finite_record(run.peers.size), rep)
        self.clock = logs.Throughput(run.config.train.batch_size)
        self.writer: logs.MetricsWriter | None = None

    def train(self) -> None:
        """Epochs until the steps run out or every peer has stopped; the last checkpoint."""
        run, live = self.run, self.live
        self.writer = logs.MetricsWriter(run.workdir, live.start_step)
        self.watcher = PreemptionWatcher()
        try:
            while live.step < run.total_steps and not live.schedule.all_stopped:
                self.epoch()
            if live.schedule.all_stopped:
                logging.info("every peer has stopped early; the run ends at step %d", live.step)
            self.check_finite()
            if self.checkpoints.last_saved_step != live.step:
                self.save(live.step)
            self.checkpoints.wait()
        finally:
            self.watcher.close()
            self.writer.close()

    def epoch(self) -> None:
        """One pass over the rest of the current epoch (or until the run stops)."""
        run, live, tc = self.run, self.live, self.run.config.train
        epoch, start_batch = divmod(live.step, run.steps_per_epoch)
        index, count = sharding.process_batch_slice(run.mesh, tc.batch_size)
        batches = run.dataset.train_batches(tc.batch_size, seed=run.config.seed, epoch=epoch,
                                            process_index=index, process_count=count,
                                            start_batch=start_batch)
        step_before = live.step
        place = functools.partial(sharding.global_batch, run.mesh, batch_size=tc.batch_size)
        for batch in inputs.prefetch(batches, place):
            if self.step(batch, epoch):
                break
        if live.step == step_before:
            raise RuntimeError(f"epoch {epoch} yielded no training batch from batch {start_batch}")
        logs.log_epoch(epoch, -(-run.total_steps // run.steps_per_epoch), live.step,
                          run.total_steps, self.clock)

    def step(self, batch, epoch: int) -> bool:
        """One update and what falls due after it; True when this epoch pass ends."""
        run, live, tc = self.run, self.live, self.run.config.train
        live.state, measurements, self.non_finite = self.run.train_step(
            live.state, batch, self.alpha, self.non_finite)
        live.step += 1
        step = live.step
        self.clock.step_done(measurements)
        if step % tc.log_steps == 0 or step == run.total_steps:
            self.log_train(step, epoch, measurements)
        end_of_epoch = step % run.steps_per_epoch == 0
        if (tc.eval_steps > 0 and step % tc.eval_steps == 0) or (
                tc.eval_steps <= 0 and end_of_epoch) or step == run.total_steps:
            self.check_finite()
            self.evaluate(step, epoch)
            self.clock.resume()  # evaluation is not training time
        if step >= run.total_steps or live.schedule.all_stopped:
            return True
        ckpt_steps = run.config.checkpoint.ckpt_steps
        if ckpt_steps > 0 and step % ckpt_steps == 0:
            self.save(step)
        self.stop_if_preempted(step)
        return end_of_epoch

    def check_finite(self) -> None:
        _raise_if_non_finite(self.run.names, self.non_finite, self.checkpoints.last_saved_step)

    def log_train(self, step: int, epoch: int, measurements) -> None:
        """metrics.jsonl, TensorBoard and the log line of the training losses."""
        self.check_finite()
        names, batch_size = self.run.names, self.run.config.train.batch_size
        m = jax.device_get(measurements)
        steps_per_sec = self.clock.interval()
        record = {"kind": "train", "step": step, "epoch": epoch,
                  "steps_per_sec": steps_per_sec,
                  "examples_per_sec": steps_per_sec * batch_size,
                  "learning_rate": dict(zip(names,
                                            self.live.schedule.live_learning_rates().tolist())),
                  **{k: dict(zip(names, np.asarray(m[k]).tolist()))
                     for k in ("loss", "bce", "mutual", "l2", "grad_norm")}}
        scalars = {f"train/{k}/{n}": v
                   for k in ("loss", "bce", "mutual", "grad_norm", "learning_rate")
                   for n, v in record[k].items()}
        scalars.update({"train/steps_per_sec": steps_per_sec,
                        "train/examples_per_sec": record["examples_per_sec"]})
        self.writer.write(record, scalars)
        logs.log_train(step, self.run.total_steps, record["loss"], record["examples_per_sec"])

    def evaluate(self, step: int, epoch: int) -> None:
        """Valid metrics; the schedule's decisions: best weights, decay, early stops."""
        run, live, tc = self.run, self.live, self.run.config.train
        names = run.names
        logits, labels = evaluation.predict_split(run.predict_fn, live.state["params"],
                                       live.state["batch_stats"], run.dataset, "valid",
                                       tc.eval_batch_size, run.mesh)
        valid = evaluation.split_metrics(names, logits, labels)
        values = [metrics_lib.monitor_value(valid[n], tc.monitor) for n in names]
        improved, newly_stopped = live.schedule.update(
            values, step, patience=tc.patience, decay=run.config.optimizer.lr_decay_factor,
            min_lr=run.config.optimizer.min_learning_rate)
        live.best = self.select(_group_masks(run.peers, improved), _variables(live.state),
                                live.best)
        if any(newly_stopped):
            # A stopped peer teaches with its best weights and no longer moves.
            live.state.update(self.select(_group_masks(run.peers, newly_stopped), live.best,
                                          _variables(live.state)))
        live.state["learning_rate"] = sharding.put(live.schedule.live_learning_rates(),
                                                   run.state_shardings["learning_rate"])
        stopped = dict(zip(names, live.schedule.stopped))
        self.writer.write(
            {"kind": "eval", "step": step, "epoch": epoch, "valid": valid,
             "learning_rate": dict(zip(names, live.schedule.learning_rate)), "stopped": stopped},
            {**logs.per_peer_scalars("valid/auc", {n: m["auc"] for n, m in valid.items()}),
             **logs.per_peer_scalars("valid/logloss",
                                        {n: m["logloss"] for n, m in valid.items()})})
        logs.log_eval(step, valid, dict(zip(names, improved)), stopped)

    def save(self, step: int) -> None:
        """Starts writing checkpoint `step`, never one of a state that went non-finite."""
        self.check_finite()
        epoch, batch_in_epoch = divmod(step, self.run.steps_per_epoch)
        self.checkpoints.save(step, self.live.state, self.live.best, {
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "schedule": self.live.schedule.to_json(), "peers": self.run.names,
            "config": self.run.config_dict, "dataset": self.run.fingerprint})

    def stop_if_preempted(self, step: int) -> None:
        """After a SIGTERM: the checkpoint of this step, then `Preempted`."""
        if not self.watcher.should_stop(step):
            return
        if self.checkpoints.last_saved_step != step:
            self.save(step)
        self.checkpoints.wait()
        logging.warning("SIGTERM: saved the checkpoint at step %d; stopping", step)
        raise errors.Preempted(step, self.checkpoints.directory)


# ---------------------------------------------------------------------------
# Test: the best weights on valid and test, exported.


def test_and_export(run: Run, live: Live, clock: logs.Throughput) -> dict[str, Any]:
    """Evaluates each peer's best weights; writes best/, results.json and results.md."""
    tc = run.config.train
    results = {"peers": run.names, "steps": live.step, "resumed_from": live.start_step or None,
               "train_seconds": clock.timed_seconds, "examples_per_sec": clock.examples_per_sec,
               "schedule": live.schedule.to_json()}
    for split in ("valid", "test") if tc.test_at_end else ("valid",):
        logits, labels = evaluation.predict_split(run.predict_fn, live.best["params"],
                                       live.best["batch_stats"], run.dataset, split,
                                       tc.eval_batch_size, run.mesh)
        results[split] = evaluation.split_metrics(run.names, logits, labels)
    bayes = run.dataset.feature_map.get("bayes")
    if bayes:
        results["bayes"] = bayes
    checkpoint.save_peer_weights(run.workdir, mutual.peer_variables(
        run.peers, *sharding.to_host((live.best["params"], live.best["batch_stats"]))))
    if jax.process_index() == 0:
        with open(os.path.join(run.workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(run.workdir, "results.md"), "w") as f:
            f.write(logs.results_markdown(results))
    logs.log_results(results, run.workdir)
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains all peers of `config` and evaluates their best weights.

    Resumes from the newest checkpoint in `workdir` when there is one. The
    dataset must be prepared (`ensure_prepared`).

    Args:
      config: a locked config (see mlctr/configs/default.py).
      workdir: run directory: config.json, dataset.json, metrics.jsonl,
        tensorboard/, checkpoints/, best/, results.json, results.md.

    Returns:
      results dict with per-peer 'valid' and 'test' metrics of the best
      weights, the schedule and throughput.

    Raises:
      ValueError: a nonsense config value (`config.<key>: ...`).
      RunError: the work dir or dataset cannot be used.
      mlctr.locking.LockedError: another run holds the work dir.
      NonFiniteLossError: a peer's loss became NaN or inf.
      Preempted: SIGTERM arrived; a checkpoint was saved.
      checkpoint.CheckpointError: the checkpoint in `workdir` is unreadable or
        belongs to another config.
    """
    check_can_start(config, workdir)
    with workdir_lock(workdir):
        run = build(config, workdir)
        checkpoints = checkpoint.RunCheckpoints(workdir, keep=config.checkpoint.keep)
        try:
            live = restore_or_start(run, checkpoints)
            write_run_files(run)
            loop = TrainLoop(run, live, checkpoints)
            loop.train()
        finally:
            checkpoints.close()  # waits for a save in flight: earlier checkpoints are good
        return test_and_export(run, live, loop.clock)
