"""Checkpoints with orbax: the resumable run state and per-peer best weights.

Two kinds of checkpoint live in a run directory:

* `checkpoints/<step>/` (`RunCheckpoints`, an orbax `CheckpointManager`): everything a
  run needs to continue bit for bit: `state` (stacked params, optimizer states, batch
  stats, rng, per-peer learning rates), `best` (each peer's best weights so far) and
  `progress` (JSON: step, data position, per-peer early-stopping schedule, the config
  and a fingerprint of the dataset, checked on resume). Written every
  `checkpoint.ckpt_steps` updates, at the end and on SIGTERM; the newest
  `checkpoint.keep` are kept, older ones deleted only once a newer one is complete.
* `best/`: the best weights of every peer, keyed by peer name, unstacked, exported when
  a run ends. This is what `config.init_from` reads to finetune; keyed by name so a
  finetune may pick any subset of a pretrained group.

Orbax writes each checkpoint into a temporary directory and renames it when every item
is complete, so a crash during a save never leaves a checkpoint that looks complete
(leftover temporary directories are ignored and removed at the next start).
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

BEST_DIR = "best"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the config."""


def save_peer_weights(run_dir: str, variables_by_name: dict[str, Any], extra: dict | None = None) -> str:
    """Saves {peer name: {'params', 'batch_stats'}} to <run_dir>/best (replacing it)."""
    path = os.path.abspath(os.path.join(run_dir, BEST_DIR))
    checkpointer = ocp.StandardCheckpointer()
    tree = jax.device_get(variables_by_name)
    checkpointer.save(path, tree, force=True)
    checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        with open(path + ".json", "w") as f:
            json.dump({"peers": sorted(variables_by_name), **(extra or {})}, f, indent=1)
    return path


def load_peer_weights(run_dir: str, names: list[str] | None = None) -> dict[str, Any]:
    """Loads the best weights saved by `save_peer_weights`.

    Args:
      run_dir: a run directory (or its `best/` directory).
      names: peers to return (all if None).

    Returns:
      {peer name: {'params': ..., 'batch_stats': ...}} of numpy arrays.

    Raises:
      CheckpointError: if there is no complete checkpoint or a name is missing.
    """
    path = os.path.abspath(run_dir if os.path.basename(run_dir.rstrip("/")) == BEST_DIR
                           else os.path.join(run_dir, BEST_DIR))
    if not os.path.isdir(path):
        raise CheckpointError(f"no peer weights at {path} (did the pretraining run finish?)")
    try:
        tree = ocp.StandardCheckpointer().restore(path)
    except Exception as e:  # orbax raises many types for a damaged directory
        raise CheckpointError(f"cannot read peer weights at {path}: {e}") from e
    tree = jax.tree_util.tree_map(np.asarray, tree)
    if names is not None:
        missing = [name for name in names if name not in tree]
        if missing:
            raise CheckpointError(f"{path} has no weights for peer(s) {missing}; it holds {sorted(tree)}")
        tree = {name: tree[name] for name in names}
    return tree


def peer_weights_exist(run_dir: str) -> bool:
    return os.path.isdir(os.path.join(run_dir, BEST_DIR))


# Config fields that may change when a run resumes: how long to train, how to log and
# evaluate, where the data lives and how the work is laid out on devices. Any other
# difference means a different training run, and resuming refuses it.
RESUMABLE_FIELDS = ("train.num_epochs", "train.max_steps", "train.log_steps",
                    "train.eval_batch_size", "train.test_at_end", "data.data_dir", "data.raw",
                    "mutual.peer_execution", "mesh.", "checkpoint.")


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved: dict, current: dict) -> list[str]:
    """Dotted config keys whose values differ (outside RESUMABLE_FIELDS), with both values."""
    saved, current = _flatten(saved), _flatten(json.loads(json.dumps(current)))
    differences = []
    for key in sorted(set(saved) | set(current)):
        if any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUMABLE_FIELDS):
            continue
        if saved.get(key, "<absent>") != current.get(key, "<absent>"):
            differences.append(f"{key}: checkpoint {saved.get(key, '<absent>')!r}, "
                               f"config {current.get(key, '<absent>')!r}")
    return differences


class RunCheckpoints:
    """The resumable checkpoints of one run, <workdir>/checkpoints/<step>/.

    Every process of a multi-process run must create it and call `save`/`restore`
    together (orbax writes each process's shards and synchronises); the directory must
    be on storage all processes share.

    Args:
      workdir: the run directory.
      keep: how many of the newest checkpoints to keep (>= 1).
    """

    ITEMS = ("state", "best", "progress")

    def __init__(self, workdir: str, *, keep: int):
        if keep < 1:
            raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, CHECKPOINT_DIR)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 cleanup_tmp_directories=True),
            item_names=self.ITEMS)
        self.last_saved_step: int | None = None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, best, progress: dict):
        """Starts writing checkpoint `step` (asynchronously: the arrays are copied first,
        so training may go on and donate them); `wait` blocks until it is complete."""
        self._manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), best=ocp.args.StandardSave(best),
            progress=ocp.args.JsonSave(progress)))
        self.last_saved_step = step

    def wait(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.close()

    def restore(self, abstract_state, abstract_best, *, config: dict, dataset: dict):
        """Restores the newest checkpoint onto the given shapes and shardings.

        Args:
          abstract_state, abstract_best: pytrees of jax.ShapeDtypeStruct (with
            shardings) that the restored arrays take.
          config: the current config as a dict (`json.loads(config.to_json())`).
          dataset: the current dataset fingerprint (see `progress['dataset']`).

        Returns:
          (state, best, progress).

        Raises:
          CheckpointError: the checkpoint is corrupt or incomplete, or it was written by
            a run with another config or dataset. Nothing is deleted.
        """
        step = self.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            progress = self._manager.restore(step, args=ocp.args.Composite(
                progress=ocp.args.JsonRestore()))["progress"]
            int(progress["step"])
        except Exception as e:  # orbax raises many types for a damaged directory
            raise self._unreadable(step, e) from e
        differences = config_differences(progress.get("config", {}), config)
        if progress.get("dataset") != dataset:
            differences.append(f"dataset: checkpoint {progress.get('dataset')}, now {dataset}")
        if differences:
            raise CheckpointError(
                f"the checkpoint at {self.directory}/{step} was written by a different run; it "
                "does not match this config:\n  " + "\n  ".join(differences) + "\nUse another "
                "--workdir for a new run (the checkpoints there are kept as they are).")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                best=ocp.args.StandardRestore(abstract_best)))
            state, best = restored["state"], restored["best"]
            _check_like(state, abstract_state)
            _check_like(best, abstract_best)
        except Exception as e:
            raise self._unreadable(step, e) from e
        self.last_saved_step = step
        return state, best, progress

    def _unreadable(self, step: int, error: Exception) -> CheckpointError:
        earlier = [s for s in self.all_steps() if s < step]
        detail = (str(error).strip().splitlines() or [""])[0][:300]
        if earlier:
            hint = (f"Earlier checkpoint(s) {earlier} are kept; to resume from step "
                    f"{earlier[-1]}, move the bad one out of the way: "
                    f"mv {self.directory}/{step} {self.workdir}/bad_checkpoint_{step}")
        else:
            hint = ("There is no earlier checkpoint; move it away to start this run over: "
                    f"mv {self.directory} {self.workdir}/bad_checkpoints")
        return CheckpointError(f"the checkpoint at {self.directory}/{step} cannot be restored: "
                               f"it is corrupt or incomplete ({type(error).__name__}: {detail}). "
                               + hint)


def _check_like(tree, abstract):
    """Raises ValueError unless `tree` has the structure, shapes and dtypes of `abstract`."""
    if jax.tree_util.tree_structure(tree) != jax.tree_util.tree_structure(abstract):
        raise ValueError("restored tree structure differs from the model's")
    for (path, x), a in zip(jax.tree_util.tree_leaves_with_path(tree),
                            jax.tree_util.tree_leaves(abstract)):
        if x.shape != a.shape or x.dtype != a.dtype:
            raise ValueError(f"{jax.tree_util.keystr(path)}: restored {x.dtype}{list(x.shape)}, "
                             f"expected {a.dtype}{list(a.shape)}")
