"""The training loop of a run (`TrainLoop`): step, log, evaluate, checkpoint, early
stop; what it runs on (`Run`, fixed once built; `Live`, what changes); and the
preemption watcher that ends it after a SIGTERM. mlctr.run.train builds the run and
calls the loop."""
from __future__ import annotations

import dataclasses
import functools
import signal
import threading
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mlctr.configs import peer_schedule
from mlctr import metrics as metrics_lib
from mlctr import mutual
from mlctr import peer_groups
from mlctr import sharding
from mlctr.run import batch_stats
from mlctr.run import checkpoint
from mlctr.run import errors
from mlctr.run import evaluation
from mlctr.run import inputs
from mlctr.run import logs
from mlctr.run import stopping
from mlctr.run.schedule import PeerSchedule

def best_variables(tree) -> dict:
    """The part of a training state that the best weights keep."""
    return {k: tree[k] for k in ("params", "batch_stats")}


@dataclasses.dataclass
class Run:
    """What a run is made of; fixed once built."""

    config: ml_collections.ConfigDict
    workdir: str
    dataset: Any
    mesh: Any
    peers: peer_groups.Peers
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
    # Each peer's schedule settings (the globals with `train.peer_schedule`'s overrides).
    settings: peer_schedule.PeerSettings

    @property
    def names(self) -> list[str]:
        return list(self.peers.names)

    @property
    def best_shardings(self) -> dict:
        return best_variables(self.state_shardings)


@dataclasses.dataclass
class Live:
    """What changes as the run trains: the state, the best weights, the schedule."""

    state: dict
    best: dict
    schedule: PeerSchedule
    step: int
    start_step: int


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


def _group_masks(peers: peer_groups.Peers, per_peer: list[bool]):
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
        self.select_stats = jax.jit(_select_groups,
                                    out_shardings=run.state_shardings["batch_stats"])
        self.batch_stats_fn = (mutual.make_batch_stats_fn(
            run.peers, peer_execution=run.config.mutual.peer_execution)
            if batch_stats.has_batch_norm(run.shapes["batch_stats"]) else None)

    def train(self) -> None:
        """Epochs until the steps run out or every peer has stopped; the last checkpoint."""
        run, live = self.run, self.live
        self.writer = logs.MetricsWriter(run.workdir, live.start_step)
        self.watcher = PreemptionWatcher()
        stopping.mark_saved()  # until the first step: a SIGTERM (compiling) stops at once
        stopping.set_phase("compiling and training")
        try:
            if live.step == 0 and run.config.init_from:
                # A finetune's starting point is a candidate best: early stopping can
                # return the pretrained weights when no finetuned step beats them.
                self.evaluate(0, 0)
            while live.step < run.total_steps and not live.schedule.all_stopped:
                self.epoch()
            if live.schedule.all_stopped:
                logging.info("every peer has stopped early; the run ends at step %d", live.step)
            self.clock.sync()
            self.check_finite()
            if self.checkpoints.last_saved_step != live.step:
                self.save(live.step)
            self.checkpoints.wait()
            stopping.mark_saved()
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
        stopping.mark_unsaved(self.checkpoints.last_saved_step)
        self.clock.step_done(measurements)
        if step % tc.log_steps == 0 or step == run.total_steps:
            self.log_train(step, epoch, measurements)
        end_of_epoch = step % run.steps_per_epoch == 0
        if (tc.eval_steps > 0 and step % tc.eval_steps == 0) or (
                tc.eval_steps <= 0 and end_of_epoch) or step == run.total_steps:
            self.clock.sync()  # the wait for the dispatched steps is training time
            self.check_finite()
            self.evaluate(step, epoch)
            self.clock.resume()  # evaluation is not
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
        steps_per_sec = self.clock.interval()  # first: it waits for the dispatched steps
        self.check_finite()
        names, batch_size = self.run.names, self.run.config.train.batch_size
        m = jax.device_get(measurements)
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
        self.recompute_batch_stats()
        logits, labels = evaluation.predict_split(run.predict_fn, live.state["params"],
                                       live.state["batch_stats"], run.dataset, "valid",
                                       tc.eval_batch_size, run.mesh)
        valid = evaluation.split_metrics(names, logits, labels)
        broken = self.broken_predictions(step, logits, labels)
        # A broken evaluation is never a best: it counts as not improving.
        values = [-np.inf if n in broken else metrics_lib.monitor_value(valid[n], tc.monitor)
                  for n in names]
        improved, newly_stopped = live.schedule.update(
            values, step, patience=run.settings.patience, decay=run.settings.lr_decay_factor,
            min_lr=run.settings.min_learning_rate)
        live.best = self.select(_group_masks(run.peers, improved), best_variables(live.state),
                                live.best)
        if any(newly_stopped):
            # A stopped peer teaches with its best weights and no longer moves.
            live.state.update(self.select(_group_masks(run.peers, newly_stopped), live.best,
                                          best_variables(live.state)))
        live.state["learning_rate"] = sharding.put(live.schedule.live_learning_rates(),
                                                   run.state_shardings["learning_rate"])
        stopped = dict(zip(names, live.schedule.stopped))
        self.writer.write(
            {"kind": "eval", "step": step, "epoch": epoch, "valid": valid,
             "learning_rate": dict(zip(names, live.schedule.learning_rate)), "stopped": stopped,
             "broken": broken},
            {**logs.per_peer_scalars("valid/auc", {n: m["auc"] for n, m in valid.items()}),
             **logs.per_peer_scalars("valid/logloss",
                                        {n: m["logloss"] for n, m in valid.items()})})
        logs.log_eval(step, valid, dict(zip(names, improved)), stopped)

    def recompute_batch_stats(self) -> None:
        """The batch-norm statistics of every training peer, from its current weights
        (`train.precise_bn_batches` train batches; mlctr/run/batch_stats.py). Stopped
        peers keep theirs: they are frozen."""
        run, live, tc = self.run, self.live, self.run.config.train
        num_batches = tc.get("precise_bn_batches", 0)
        if self.batch_stats_fn is None or not num_batches:
            return
        index, count = sharding.process_batch_slice(run.mesh, tc.batch_size)
        # A fixed set of batches (epoch 0's first), so a resumed run computes the same.
        local = run.dataset.train_batches(tc.batch_size, seed=run.config.seed, epoch=0,
                                          process_index=index, process_count=count)
        placed = ({"ids": sharding.global_batch(run.mesh, b, tc.batch_size)["ids"]}
                  for b in local)
        precise = batch_stats.precise_batch_stats(
            self.batch_stats_fn, live.state["params"], live.state["batch_stats"], placed,
            num_batches)
        training = [not s for s in live.schedule.stopped]
        live.state["batch_stats"] = self.select_stats(_group_masks(run.peers, training),
                                                      precise, live.state["batch_stats"])

    def broken_predictions(self, step: int, logits, labels) -> dict[str, str]:
        """{peer: why} for the training peers whose valid predictions are broken; one
        warning line each, and the step recorded in the schedule (the results mark it)."""
        run, live, tc = self.run, self.live, self.run.config.train
        health = evaluation.prediction_health(run.names, logits, labels)
        broken = {}
        for k, name in enumerate(run.names):
            why = evaluation.unhealthy(health[name], tc.get("max_saturated", 0),
                                       tc.get("max_logloss_ratio", 0))
            if why and not live.schedule.stopped[k]:
                broken[name] = why
                live.schedule.flagged_steps[k].append(step)
                logging.warning("step %d: peer %s's valid predictions are broken: %s; this "
                                "evaluation cannot be its best", step, name, why)
        return broken

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
        stopping.mark_saved()
        logging.warning("SIGTERM: saved the checkpoint at step %d; stopping", step)
        raise errors.Preempted(step, self.checkpoints.directory)
