"""train_and_evaluate(config, workdir): the one trainer for every mode.

Independent training, mutual learning from scratch, mutual finetuning and the
independent finetune control are all this loop with different configs:
`mutual.alpha = 0` makes the peers independent, `init_from` starts them from
a pretrained run's best weights.

The trainer reads top down: `train_and_evaluate` checks the config and work dir and
locks it, then `build` (dataset, peers, shapes), `restore_or_start` (the newest
checkpoint or fresh peers), `loop.TrainLoop` (step, log, evaluate, checkpoint,
early stop) and `test_and_export` (the best weights on valid and test). The dataset must be
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
import json
import os
from typing import Any, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlctr import atomic
from mlctr.run import checkpoint
from mlctr import locking
from mlctr import mutual
from mlctr import peer_groups
from mlctr.run import logs
from mlctr.run import memory
from mlctr.run import stopping
from mlctr import sharding
from mlctr.configs import peer_schedule
from mlctr.configs import validate as config_validation
from mlctr.run import errors
from mlctr.run import evaluation
from mlctr.run import inputs
from mlctr.run import loop
from mlctr.run.schedule import PeerSchedule


# ---------------------------------------------------------------------------
# Peers and the jitted step.


def build_run(config: ml_collections.ConfigDict, dataset, mesh=None):
    """Peers, optimizer and the jitted predict function for a config and dataset.

    On a peer-parallel `mesh`, `mutual.peer_execution = auto` means vmap
    (see `sharding.peer_execution`).
    """
    try:  # a model the dataset makes too large (ONN's tables), or one that cannot be built
        peers = peer_groups.build_peers(
            config.peers, config.models, vocab_size=dataset.vocab_size,
            num_fields=dataset.num_fields, dtype=config.compute_dtype,
            table_row_multiple=sharding.table_row_multiple(mesh),
            qr_layout=peer_groups.qr_layout(config, dataset))
    except ValueError as e:
        raise errors.RunError(f"config.models: {e}") from None
    optimizer = peer_groups.make_optimizer(config.optimizer.grad_clip_norm, config.optimizer.b1,
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
    state = jax.jit(lambda key: peer_groups.init_state(
        peers, key, sample_ids, optimizer, config.optimizer.learning_rate,
        same_init=config.mutual.same_init))(jax.random.PRNGKey(config.seed))
    if config.init_from:
        weights = checkpoint.load_peer_weights(
            config.init_from, list(peers.names),
            allow_unverified=config.checkpoint.get("allow_unverified", False),
            allow_hint="--config.checkpoint.allow_unverified=True")
        params, batch_stats = peer_groups.stack_peer_variables(peers, weights)
        state["params"] = jax.tree_util.tree_map(jnp.asarray, params)
        state["batch_stats"] = jax.tree_util.tree_map(jnp.asarray, batch_stats)
        state["opt_state"] = jax.jit(lambda params: tuple(
            jax.vmap(optimizer.init)(p) for p in params))(state["params"])
        logging.info("Initialised peers %s from %s", peers.names, config.init_from)
    return state


def abstract_state(config, peers, optimizer, dataset):
    """Shapes and dtypes of the training state, without computing it."""
    return jax.eval_shape(lambda: peer_groups.init_state(
        peers, jax.random.PRNGKey(config.seed), jnp.zeros((2, dataset.num_fields), jnp.int32),
        optimizer, config.optimizer.learning_rate, same_init=config.mutual.same_init))



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
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise errors.RunError(
            f"the work dir {workdir} is not writable by this user (mode "
            f"{os.stat(workdir).st_mode & 0o777:o}): fix its permissions or pass another "
            "--workdir")


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


def _checkpoint_config(config: ml_collections.ConfigDict, peers: peer_groups.Peers) -> dict:
    """The config as a checkpoint records it, less the hyperparameter sets of models
    that are not peers here (code updates may add fields to those)."""
    config_dict = json.loads(config.to_json_best_effort())
    config_dict["models"] = {key: config_dict["models"][key] for key in
                             dict.fromkeys(g.config_key for g in peers.groups)}
    return config_dict


def _checked_mesh(config: ml_collections.ConfigDict):
    """The config's mesh over this job's devices; a mesh that does not fit them (sizes
    that do not multiply to the device count, a table axis that does not divide it) is a
    RunError naming config.mesh and the device count, not a ValueError traceback."""
    try:
        return sharding.mesh_from_config(config.mesh)
    except ValueError as e:
        sizes = ", ".join(f"{k}={v}" for k, v in config.mesh.items())
        raise errors.RunError(f"config.mesh ({sizes}) does not fit the {jax.device_count()} "
                              f"{jax.default_backend()} device(s): {e}") from None


def build(config: ml_collections.ConfigDict, workdir: str) -> loop.Run:
    """Opens the dataset and builds the peers, the step and the state's layout."""
    dataset = inputs.open_run_dataset(config, workdir)
    mesh = _checked_mesh(config)
    peers, optimizer, predict_fn = build_run(config, dataset, mesh=mesh)
    logging.info("Peers: %s (groups: %s); mesh %s over %d process(es)", list(peers.names),
                 [g.config_key for g in peers.groups], dict(mesh.shape), jax.process_count())
    # Fail early when a batch does not divide over the processes.
    try:
        inputs.check_batch_slices(dataset, mesh, config.train.batch_size)
    except ValueError as e:
        raise errors.RunError(f"config.train.batch_size: {e}") from None
    try:
        sharding.process_batch_slice(mesh, config.train.eval_batch_size)
    except ValueError as e:
        raise errors.RunError(f"config.train.eval_batch_size: {e}") from None
    steps_per_epoch, total_steps = run_length(config.train, dataset)
    shapes = abstract_state(config, peers, optimizer, dataset)
    try:
        state_shardings = sharding.state_shardings(
            mesh, shapes, [g.size for g in peers.groups], [g.config_key for g in peers.groups])
    except ValueError as e:
        raise errors.RunError(f"config.mesh: {e}") from None
    # Before the state is built: a config that cannot fit ends here, in one line.
    memory.check_fits(config, peers, shapes, state_shardings, mesh, dataset.num_fields)
    train_step = make_step(config, peers, optimizer, mesh, state_shardings)
    settings = peer_schedule.peer_settings(
        config, peers.names, [g.config_key for g in peers.groups for _ in g.names])
    return loop.Run(config, workdir, dataset, mesh, peers, optimizer, train_step, predict_fn,
               steps_per_epoch, total_steps, shapes, state_shardings,
               _checkpoint_config(config, peers), inputs.dataset_fingerprint(dataset), settings)


# ---------------------------------------------------------------------------
# Restore: the newest checkpoint, or fresh peers.


def restore_or_start(run: loop.Run, checkpoints: checkpoint.RunCheckpoints) -> loop.Live:
    """Resumes from the newest checkpoint in the work dir, else starts fresh peers."""
    if checkpoints.latest_step() is None:
        return _start(run)
    as_target = lambda tree, shardings: jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
    state, best, progress = checkpoints.restore(
        as_target(run.shapes, run.state_shardings),
        as_target(loop.best_variables(run.shapes), run.best_shardings),
        config=run.config_dict, dataset=run.fingerprint, table_rows=run.peers.vocab_size)
    start_step = int(progress["step"])
    logging.info("Resumed from the checkpoint at step %d (epoch %d, batch %d)", start_step,
                 *divmod(start_step, run.steps_per_epoch))
    return loop.Live(state, best, PeerSchedule.from_json(progress["schedule"]), start_step,
                start_step)


def _start(run: loop.Run) -> loop.Live:
    config, names = run.config, run.names
    host_state = jax.device_get(initial_state(config, run.peers, run.optimizer, run.dataset))
    schedule = PeerSchedule.start(run.peers.size, run.settings.learning_rate)
    frozen = [n.strip() for n in config.mutual.frozen_peers.split(",") if n.strip()]
    unknown = sorted(set(frozen) - set(names))
    if unknown:
        raise errors.RunError(f"config.mutual.frozen_peers names unknown peer(s) {unknown}; "
                              f"peers: {names}")
    for name in frozen:  # teachers of one-way distillation: never updated
        schedule.stopped[names.index(name)] = True
    host_state["learning_rate"] = schedule.live_learning_rates()
    state = sharding.put(host_state, run.state_shardings)
    # A separate copy: the live state's buffers are donated to the step.
    best = sharding.put(loop.best_variables(host_state), run.best_shardings)
    return loop.Live(state, best, schedule, 0, 0)


def write_run_files(run: loop.Run) -> None:
    """config.json and dataset.json (process 0)."""
    if jax.process_index() == 0:
        atomic.write_text(os.path.join(run.workdir, "config.json"),
                          run.config.to_json_best_effort(indent=1))
    inputs.write_dataset_record(run.workdir, run.config.data.dataset, run.fingerprint)


# ---------------------------------------------------------------------------
# Test: the best weights on valid and test, exported.


def test_and_export(run: loop.Run, live: loop.Live,
                    clock: logs.Throughput) -> dict[str, Any]:
    """Evaluates each peer's best weights; writes best/, results.json and results.md."""
    tc = run.config.train
    results = {"peers": run.names, "steps": live.step, "resumed_from": live.start_step or None,
               "train_seconds": clock.timed_seconds, "examples_per_sec": clock.examples_per_sec,
               "schedule": live.schedule.to_json()}
    results["broken"] = {}  # {split: {peer: why}}: the best weights' predictions broken
    inputs.warn_if_replaced(run.dataset)
    for split in ("valid", "test") if tc.test_at_end else ("valid",):
        logits, labels = evaluation.predict_split(run.predict_fn, live.best["params"],
                                       live.best["batch_stats"], run.dataset, split,
                                       tc.eval_batch_size, run.mesh)
        results[split] = evaluation.split_metrics(run.names, logits, labels)
        health = evaluation.prediction_health(run.names, logits, labels)
        results["broken"][split] = {
            name: why for name in run.names if (why := evaluation.unhealthy(
                health[name], tc.get("max_saturated", 0), tc.get("max_logloss_ratio", 0)))}
        for name, why in results["broken"][split].items():
            logging.warning("peer %s's best weights give broken %s predictions: %s", name,
                            split, why)
    bayes = run.dataset.feature_map.get("bayes")
    if bayes:
        results["bayes"] = bayes
    checkpoint.save_peer_weights(run.workdir, peer_groups.peer_variables(
        run.peers, *sharding.to_host((live.best["params"], live.best["batch_stats"]))))
    if jax.process_index() == 0:
        atomic.write_json(os.path.join(run.workdir, "results.json"), results, indent=1)
        atomic.write_text(os.path.join(run.workdir, "results.md"),
                          logs.results_markdown(results))
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
    stopping.mark_saved()
    stopping.set_phase(f"building the run in {workdir}")
    with workdir_lock(workdir):
        run = build(config, workdir)
        checkpoints = checkpoint.RunCheckpoints(workdir, keep=config.checkpoint.keep)
        try:
            live = restore_or_start(run, checkpoints)
            write_run_files(run)
            train_loop = loop.TrainLoop(run, live, checkpoints)
            train_loop.train()
        finally:
            checkpoints.close()  # waits for a save in flight: earlier checkpoints are good
        stopping.set_phase("evaluating and exporting the best weights")
        return test_and_export(run, live, train_loop.clock)
