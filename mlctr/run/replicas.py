"""A study in one program: R replicas of a peer set on a leading axis, one jitted step.

A study runs every (seed, arm) of a claim, and each is a small run: on a CPU its steps
are short and its start-up (build, compilation, dataset open, export) is a large part of
it; on a GPU a small peer's step is bound by kernel launches. A *replica* is one such
run, and `train_replicas` trains R of them as one program: the single-run state of
`mlctr.run.train` stacked on a leading replica axis and the single-run step
(`mutual.make_train_step`) mapped over it with `jax.vmap`, so everything inside one
replica (the mutual terms included) is exactly the single run's program.

What differs between replicas (`REPLICA_KEYS`): the seed (init keys, dropout stream and
data order), `mutual.alpha` (an argument of the step, [R] here), the learning rate (the
state's per-peer learning rates, [R, N] here) and `init_from` (the weights a finetune
starts from). Everything else must agree (`check_compatible`). Each replica keeps its
own per-peer schedule and early stopping (`PeerSchedule`), best weights, metrics.jsonl,
best/, results.json and results.md in its own run directory, as if it had run alone, so
everything that reads a run directory (the experiment runners' caches, DeLong's test,
`mlctr.predict`) reads a replica's.

Data order. Replica r visits the train rows in the order of its seed
(`PreparedDataset.train_batches(seed=...)`, the single run's batches bit for bit);
replicas of the same seed (the two arms of a claim) share that order: the host reads one
batch per distinct seed, [U, B, F], and the step gathers each replica's [R, B, F] on the
device.

A replica whose peers have all stopped rides along in the step (learning rate 0) until the
program ends; its results are fixed when it stops.

Equality with the single run (tests/test_replicas.py): with `execution='unroll'` (the
replicas as a Python loop traced into the program) a replica's steps, schedule, metrics
and best weights are bitwise the same run's alone on CPU. With `jax.vmap` (the default:
one batched program, compiled like one replica) XLA's batched matmuls may sum in another
order, so they agree to 1e-6 (logloss), 1e-5 (weights after 60 Adam steps) and a
few swapped near-ties (AUC); with batch norm, whose E[x^2] - E[x]^2 variance amplifies
those differences through the running statistics, unroll is the exact choice.

Not yet: meshes of more than one device, and checkpoints (an interrupted program starts
again; the runners reuse the replicas' finished run directories).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlctr import locking
from mlctr import metrics as metrics_lib
from mlctr import mutual
from mlctr import peer_groups
from mlctr import sharding
from mlctr.run import checkpoint
from mlctr.run import evaluation
from mlctr.run import inputs
from mlctr.run import logs
from mlctr.run import resume
from mlctr.run import loop
from mlctr.run import train
from mlctr.run.errors import NonFiniteLossError, RunError
from mlctr.run.schedule import PeerSchedule

# The config keys that may differ between the replicas of one program.
REPLICA_KEYS = ("seed", "mutual.alpha", "optimizer.learning_rate", "init_from")
EXECUTIONS = ("vmap", "unroll")
# Memory a replica needs beyond its state, as a multiple of the state: the best weights,
# the gradients and the optimizer's temporaries of the step.
MEMORY_FACTOR = 4.0


@dataclasses.dataclass(frozen=True)
class Replica:
    """One run of a study: its config (locked) and run directory."""
    config: ml_collections.ConfigDict
    workdir: str


def _without_replica_keys(config: ml_collections.ConfigDict) -> dict:
    d = json.loads(config.to_json_best_effort())
    for key in REPLICA_KEYS:
        *parents, leaf = key.split(".")
        node = d
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    return d


def check_compatible(replicas: Sequence[Replica]) -> None:
    """Raises ValueError (one line) unless the replicas differ only in `REPLICA_KEYS`."""
    if not replicas:
        raise ValueError("no replicas to train")
    first = _without_replica_keys(replicas[0].config)
    for r in replicas[1:]:
        differences = resume.config_differences(first, _without_replica_keys(r.config))
        if differences:
            raise ValueError(f"replica {r.workdir} differs from {replicas[0].workdir} in more "
                             f"than {', '.join(REPLICA_KEYS)}: {'; '.join(differences[:3])}")
    dirs = [os.path.abspath(r.workdir) for r in replicas]
    if len(set(dirs)) != len(dirs):
        raise ValueError("two replicas share a run directory")


def state_bytes(run: loop.Run) -> int:
    """Bytes of one replica's training state."""
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize
               for x in jax.tree_util.tree_leaves(run.shapes))


def memory_budget() -> int:
    """Bytes the replicas may take: 80% of the device's limit, or half of the host's
    available memory on CPU."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(0.8 * stats["bytes_limit"])
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024 // 2


def max_replicas(run: loop.Run) -> int:
    """How many replicas of `run` fit in `memory_budget` at once (at least 1)."""
    return max(1, int(memory_budget() // (MEMORY_FACTOR * max(1, state_bytes(run)))))


# ---------------------------------------------------------------------------
# The stacked step and predict.


def _unrolled(fn, size: int):
    """fn over a leading axis of `size` as a Python loop traced into one program: each
    replica runs the single run's operations (bitwise the single run's on CPU), at the
    cost of a program `size` times as large to compile."""

    def mapped(*args):
        outs = [fn(*jax.tree_util.tree_map(lambda x: x[r], args)) for r in range(size)]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)

    return mapped


def replica_step(train_step, execution: str = "vmap", size: int = 0):
    """The single-run step mapped over replicas, jitted once.

    Args:
      train_step: the single run's step without shardings (`train.make_step` with no
        mesh): step(state, batch, alpha, non_finite) -> (state, measurements, non_finite).
      execution: 'vmap' (one batched program; XLA's batched matmuls may round
        differently from the single run's) or 'unroll' (`_unrolled`: bitwise the single
        run's on CPU; compiles `size` copies).
      size: the number of replicas (for 'unroll').

    Returns:
      step(state, batches, seed_index, alpha, non_finite) -> (state, measurements,
      non_finite): state stacked [R, ...] (donated); batches the host's [U, B, ...] batch
      per distinct seed, seed_index int32 [R] picks replica r's; alpha float32 [R];
      non_finite = (first step [R, N], -1 while finite; loss [R, N] at that step).
    """
    mapped = jax.vmap(train_step) if execution == "vmap" else _unrolled(train_step, size)

    def step(state, batches, seed_index, alpha, non_finite):
        batch = jax.tree_util.tree_map(lambda x: jnp.take(x, seed_index, axis=0), batches)
        return mapped(state, batch, alpha, non_finite)

    return jax.jit(step, donate_argnums=(0,))


def replica_predict(predict_fn, execution: str = "vmap", size: int = 0):
    """predict(params, batch_stats, ids) over stacked replicas: logits [R * N, B], the
    replica-major rows `evaluation.predict_split` slices like one run's [N, B]."""

    def predict(params, batch_stats, ids):
        if execution == "vmap":
            logits = jax.vmap(predict_fn, in_axes=(0, 0, None))(params, batch_stats, ids)
        else:
            logits = _unrolled(lambda p, s: predict_fn(p, s, ids), size)(params, batch_stats)
        return logits.reshape(-1, ids.shape[0])

    return predict


def _select(masks, new, old):
    """Per replica and peer ([R, n_g] per group): new where the mask is set, else old."""
    return jax.vmap(loop._select_groups)(masks, new, old)  # pylint: disable=protected-access


def _put_rows(whole: np.ndarray, rows: list[int], new) -> np.ndarray:
    """`whole` [R, ...] with rows `rows` replaced by `new` (one array per row)."""
    whole = np.array(whole)
    for r, value in zip(rows, new):
        whole[r] = value
    return whole


def _schedule(run: loop.Run) -> PeerSchedule:
    """A replica's fresh schedule at its learning rate, its frozen peers (the teachers of
    one-way distillation) stopped from the start, as `train._start` does."""
    names = run.names
    schedule = PeerSchedule.start(run.peers.size, run.config.optimizer.learning_rate)
    frozen = [n.strip() for n in run.config.mutual.frozen_peers.split(",") if n.strip()]
    unknown = sorted(set(frozen) - set(names))
    if unknown:
        raise ValueError(f"mutual.frozen_peers names unknown peer(s) {unknown}; peers: {names}")
    for name in frozen:
        schedule.stopped[names.index(name)] = True
    return schedule


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)


def _index(tree, r: int):
    return jax.tree_util.tree_map(lambda x: x[r], tree)


# ---------------------------------------------------------------------------
# The program.


@dataclasses.dataclass
class ReplicaLive:
    """What changes in one replica: its schedule, writer and when it stopped."""

    run: loop.Run
    schedule: Any
    writer: logs.MetricsWriter | None = None
    stopped_at: int | None = None  # the step at which every peer had stopped

    @property
    def name(self) -> str:
        return self.run.workdir


class ReplicaProgram:
    """R replicas trained by one jitted step; `train()` then `export()`.

    Args:
      base: the first replica's `train.build` (dataset, peers, step, predict).
      replicas: the replicas (checked by `check_compatible`).
      execution: 'vmap' or 'unroll' (`replica_step`).
    """

    def __init__(self, base: loop.Run, replicas: Sequence[Replica], execution: str = "vmap"):
        if execution not in EXECUTIONS:
            raise ValueError(f"unknown replica execution {execution!r}; expected one of "
                             f"{EXECUTIONS}")
        if base.mesh.size != 1:
            raise RunError(f"replica programs run on one device for now, not a mesh of "
                           f"{base.mesh.size}: set config.mesh to one device or run the "
                           "replicas one by one")
        self.base = base
        self.lives = [ReplicaLive(dataclasses.replace(
            base, config=r.config, workdir=r.workdir,
            config_dict=train._checkpoint_config(r.config, base.peers)), None)  # pylint: disable=protected-access
            for r in replicas]
        self.seeds = list(dict.fromkeys(int(r.config.seed) for r in replicas))
        self.seed_index = jnp.asarray([self.seeds.index(int(r.config.seed)) for r in replicas],
                                      jnp.int32)
        self.alpha = jnp.asarray([r.config.mutual.alpha for r in replicas], jnp.float32)
        self.step_fn = replica_step(train.make_step(base.config, base.peers, base.optimizer),
                                    execution, len(replicas))
        self.predict = replica_predict(base.predict_fn, execution, len(replicas))
        self.select = jax.jit(_select)
        self.step = 0
        size = (len(replicas), base.peers.size)
        self.non_finite = (jnp.full(size, -1, jnp.int32), jnp.zeros(size, jnp.float32))
        self.clock = logs.Throughput(base.config.train.batch_size * len(replicas))
        self.state, self.best = self._start()

    @property
    def size(self) -> int:
        return len(self.lives)

    def _start(self):
        """Every replica's fresh state, as the single run's `train._start` makes it, in one
        program: each replica's `mutual.init_state` from its seed's key (mapped over the
        keys), then its `init_from` weights with fresh optimizer states, its schedule
        (frozen peers stopped) and learning rates."""
        base, peers = self.base, self.base.peers
        sample_ids = jnp.zeros((2, base.dataset.num_fields), jnp.int32)
        init = jax.vmap(lambda key: peer_groups.init_state(
            peers, key, sample_ids, base.optimizer, 0.0,
            same_init=base.config.mutual.same_init))
        keys = jnp.stack([jax.random.PRNGKey(live.run.config.seed) for live in self.lives])
        state = jax.device_get(jax.jit(init)(keys))
        loaded = [r for r, live in enumerate(self.lives) if live.run.config.init_from]
        if loaded:
            variables = [peer_groups.stack_peer_variables(peers, checkpoint.load_peer_weights(
                self.lives[r].run.config.init_from, list(peers.names))) for r in loaded]
            for key, part in (("params", 0), ("batch_stats", 1)):
                state[key] = jax.tree_util.tree_map(
                    lambda whole, *new: _put_rows(whole, loaded, new),
                    state[key], *[v[part] for v in variables])
            state["opt_state"] = jax.device_get(jax.jit(lambda params: tuple(
                jax.vmap(jax.vmap(base.optimizer.init))(p) for p in params))(state["params"]))
        for live in self.lives:
            live.schedule = _schedule(live.run)
            train.write_run_files(live.run)
        state["learning_rate"] = np.stack([live.schedule.live_learning_rates()
                                           for live in self.lives])
        return jax.device_put(state), jax.device_put(loop.best_variables(state))

    def _masks(self, per_replica: list[list[bool]]):
        flags = np.asarray(per_replica, bool)
        return tuple(jnp.asarray(flags[:, sl]) for sl in self.base.peers.group_slices())

    @property
    def all_stopped(self) -> bool:
        return all(live.stopped_at is not None for live in self.lives)

    def batches(self, epoch: int, start_batch: int):
        """[U, B, ...] host batches, one row per distinct seed, of one epoch."""
        tc, dataset = self.base.config.train, self.base.dataset
        readers = [dataset.train_batches(tc.batch_size, seed=s, epoch=epoch,
                                         start_batch=start_batch) for s in self.seeds]
        for per_seed in zip(*readers):
            yield _stack(per_seed)

    def train(self) -> None:
        """Epochs until the steps run out or every replica has stopped."""
        base = self.base
        for live in self.lives:
            live.writer = logs.MetricsWriter(live.run.workdir, 0)
        try:
            while self.step < base.total_steps and not self.all_stopped:
                epoch, start_batch = divmod(self.step, base.steps_per_epoch)
                for batches in inputs.prefetch(self.batches(epoch, start_batch)):
                    if self.train_step(batches, epoch):
                        break
                logs.log_epoch(epoch, -(-base.total_steps // base.steps_per_epoch), self.step,
                               base.total_steps, self.clock)
            self.check_finite()
        finally:
            for live in self.lives:
                live.writer.close()

    def train_step(self, batches, epoch: int) -> bool:
        """One update of every replica and what falls due; True when the epoch pass ends."""
        base, tc = self.base, self.base.config.train
        self.state, measurements, self.non_finite = self.step_fn(
            self.state, batches, self.seed_index, self.alpha, self.non_finite)
        self.step += 1
        step = self.step
        self.clock.step_done(measurements)
        if step % tc.log_steps == 0 or step == base.total_steps:
            self.log_train(step, epoch, measurements)
        end_of_epoch = step % base.steps_per_epoch == 0
        if (tc.eval_steps > 0 and step % tc.eval_steps == 0) or (
                tc.eval_steps <= 0 and end_of_epoch) or step == base.total_steps:
            self.clock.sync()  # the wait for the dispatched steps is training time
            self.check_finite()
            self.evaluate(step, epoch)
            self.clock.resume()  # evaluation is not
        return step >= base.total_steps or self.all_stopped or end_of_epoch

    def check_finite(self) -> None:
        """NonFiniteLossError naming each replica (not yet stopped) whose loss went NaN/inf."""
        first_step, first_loss = jax.device_get(self.non_finite)
        names = self.base.names
        bad = [f"replica {live.name}: peer {names[k]!r} ({first_loss[r, k]}) at step "
               f"{first_step[r, k]}" for r, live in enumerate(self.lives)
               for k in range(len(names)) if first_step[r, k] >= 0
               and (live.stopped_at is None or first_step[r, k] <= live.stopped_at)]
        if bad:
            raise NonFiniteLossError("non-finite training loss: " + "; ".join(bad)
                                     + ". Stopping: no replica of this program is saved.")

    def log_train(self, step: int, epoch: int, measurements) -> None:
        """Each running replica's train record (metrics.jsonl, TensorBoard)."""
        self.check_finite()
        names, batch_size = self.base.names, self.base.config.train.batch_size
        m = jax.device_get(measurements)
        steps_per_sec = self.clock.interval()
        for r, live in enumerate(self.lives):
            if live.stopped_at is not None:
                continue
            record = {"kind": "train", "step": step, "epoch": epoch,
                      "steps_per_sec": steps_per_sec,
                      "examples_per_sec": steps_per_sec * batch_size,
                      "learning_rate": dict(zip(names,
                                                live.schedule.live_learning_rates().tolist())),
                      **{k: dict(zip(names, np.asarray(m[k][r]).tolist()))
                         for k in ("loss", "bce", "mutual", "l2", "grad_norm")}}
            live.writer.write(record, {f"train/{k}/{n}": v for k in ("loss", "bce", "mutual")
                                       for n, v in record[k].items()})
        logging.info("step %d/%d  %d replicas  %.0f examples/s", step, self.base.total_steps,
                     self.size, steps_per_sec * batch_size * self.size)

    def split_metrics(self, params, batch_stats, split: str) -> list[dict]:
        """Each replica's `evaluation.split_metrics` of a split, from one pass over it."""
        base = self.base
        logits, labels = evaluation.predict_split(
            self.predict, params, batch_stats, base.dataset, split,
            base.config.train.eval_batch_size, base.mesh)
        logits = logits.reshape(self.size, base.peers.size, -1)
        return [evaluation.split_metrics(base.names, logits[r], labels)
                for r in range(self.size)]

    def evaluate(self, step: int, epoch: int) -> None:
        """Valid metrics; each replica's schedule decides its best weights, decays, stops."""
        tc, names = self.base.config.train, self.base.names
        per_replica = self.split_metrics(self.state["params"], self.state["batch_stats"], "valid")
        improved, newly_stopped = [], []
        for live, valid in zip(self.lives, per_replica):
            running = live.stopped_at is None
            values = [metrics_lib.monitor_value(valid[n], tc.monitor) for n in names]
            up, stop = live.schedule.update(
                values, step, patience=tc.patience, decay=live.run.config.optimizer.lr_decay_factor,
                min_lr=live.run.config.optimizer.min_learning_rate)
            improved.append(up)
            newly_stopped.append(stop)
            if not running:
                continue
            stopped = dict(zip(names, live.schedule.stopped))
            live.writer.write({"kind": "eval", "step": step, "epoch": epoch, "valid": valid,
                               "learning_rate": dict(zip(names, live.schedule.learning_rate)),
                               "stopped": stopped},
                              {**logs.per_peer_scalars("valid/auc", {n: m["auc"] for n, m in valid.items()}),
                               **logs.per_peer_scalars("valid/logloss", {n: m["logloss"] for n, m in valid.items()})})
            if live.schedule.all_stopped:
                live.stopped_at = step
                logging.info("replica %s: every peer has stopped early at step %d", live.name,
                             step)
        variables = loop.best_variables
        self.best = self.select(self._masks(improved), variables(self.state), self.best)
        if any(any(s) for s in newly_stopped):
            self.state.update(self.select(self._masks(newly_stopped), self.best,
                                          variables(self.state)))
        self.state["learning_rate"] = jnp.asarray(
            np.stack([live.schedule.live_learning_rates() for live in self.lives]))

    def export(self) -> list[dict[str, Any]]:
        """Each replica's `train.test_and_export`: best weights on valid and test, best/,
        results.json and results.md in its run directory."""
        tc = self.base.config.train
        splits = ("valid", "test") if tc.test_at_end else ("valid",)
        metrics = {split: self.split_metrics(self.best["params"], self.best["batch_stats"], split)
                   for split in splits}
        host_best = jax.device_get((self.best["params"], self.best["batch_stats"]))
        bayes = self.base.dataset.feature_map.get("bayes")
        out = []
        for r, live in enumerate(self.lives):
            results = {"peers": self.base.names, "steps": live.stopped_at or self.step,
                       "resumed_from": None, "train_seconds": self.clock.timed_seconds,
                       "examples_per_sec": self.clock.examples_per_sec,
                       "schedule": live.schedule.to_json(), "replicas": self.size,
                       **{split: metrics[split][r] for split in splits}}
            if bayes:
                results["bayes"] = bayes
            checkpoint.save_peer_weights(live.run.workdir, peer_groups.peer_variables(
                self.base.peers, *_index(host_best, r)))
            with open(os.path.join(live.run.workdir, "results.json"), "w") as f:
                json.dump(results, f, indent=1)
            with open(os.path.join(live.run.workdir, "results.md"), "w") as f:
                f.write(logs.results_markdown(results))
            logs.log_results(results, live.run.workdir)
            out.append(results)
        return out


def train_replicas(replicas: Sequence[Replica], max_size: int = 0,
                   execution: str = "vmap") -> list[dict[str, Any]]:
    """Trains `replicas` as one program (or several, `max_size` replicas or as many as fit
    in memory each) and returns each replica's results, in order.

    Each replica's run directory ends up as the single run's would (config.json,
    dataset.json, metrics.jsonl, tensorboard/, best/, results.json, results.md), without
    checkpoints/. The dataset must be prepared (`inputs.ensure_prepared`).

    Raises:
      ValueError: the replicas differ in more than `REPLICA_KEYS`, or a bad config.
      RunError: a work dir or the dataset cannot be used, or a mesh of several devices.
      mlctr.locking.LockedError: another run holds one of the run directories.
      NonFiniteLossError: a replica's loss became NaN or inf.
    """
    check_compatible(replicas)
    for r in replicas:
        train.check_can_start(r.config, r.workdir)
    base = train.build(replicas[0].config, replicas[0].workdir)
    size = max_size or max_replicas(base)
    results = []
    for begin in range(0, len(replicas), size):
        chunk = replicas[begin:begin + size]
        with contextlib.ExitStack() as locks:
            for r in chunk:
                locks.enter_context(locking.exclusive_lock(r.workdir, "run"))
            logging.info("Training %d replicas as one program (%d of %d)", len(chunk),
                         begin + len(chunk), len(replicas))
            program = ReplicaProgram(base, chunk, execution)
            program.train()
            results.extend(program.export())
    return results
