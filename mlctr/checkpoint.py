"""Checkpoints with orbax: the resumable run state and per-peer best weights.

Two kinds of checkpoint live in a run directory:

* `checkpoints/<step>/` (orbax `CheckpointManager`): the whole training state
  (stacked params, optimizer states, batch stats, rng, per-peer learning
  rates) plus a JSON `progress` item (per-peer early-stopping state, data
  position). Resuming from it continues the run where it stopped.
* `best/`: the best weights of every peer, keyed by peer name, unstacked. This
  is what `config.init_from` reads to finetune, and what `predict` scores with;
  keyed by name so a finetune may pick any subset of a pretrained group.

Orbax writes to a temporary directory and renames it when complete, so a
crash during a save never leaves a checkpoint that looks complete.
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
