"""The memory a run needs, estimated before anything is built, and a refusal in one line.

A config that cannot fit used to fail late or never: the default 2^20 hash buckets per
field on a 2k-row file trained into RESOURCE_EXHAUSTED after 48 s and 6.6 GB,
`embedding_dim=10**6` hung in the first `device_get`, `eval_batch_size=10**9` failed only
at the first evaluation, after the steps since the last checkpoint. The
training state's size is exact (`jax.eval_shape` shapes and the state's shardings: bytes
per device); activations are a lower bound (the embeddings and the widest hidden layers
of each peer, forward and backward, for the batch share of one device). So the check
never refuses a run that fits; it refuses those that certainly do not.

The limit is the device's `bytes_limit` from `memory_stats()` where jax reports one
(GPU, TPU); on CPU, where the devices are the host, the host's available memory
(MemAvailable in /proc/meminfo, else os.sysconf) shared by the local devices.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from mlctr.run.errors import RunError



def _size(n: float) -> str:
    """Bytes as GB with three significant digits, in plain notation (no 2e+04)."""
    gb = n / 1e9
    return f"{gb:,.0f} GB" if gb >= 100 else f"{gb:.3g} GB"


def host_available_bytes() -> tuple[int, str]:
    """(bytes, where it was read) of the host memory available to a new allocation."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                "os.sysconf available pages")
    except (OSError, ValueError):
        return 0, ""


def device_limit_bytes() -> tuple[int, str]:
    """(bytes per device, what it is) of the first local device; 0 if unknown."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory statistics raise various types
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform} bytes_limit in memory_stats()"
    available, where = host_available_bytes()
    return available // max(1, jax.local_device_count()), (
        f"{where}" + (f" / {jax.local_device_count()} local devices"
                      if jax.local_device_count() > 1 else ""))


def _per_device_bytes(shapes, shardings) -> int:
    total = 0
    for leaf, leaf_sharding in zip(jax.tree_util.tree_leaves(shapes),
                                   jax.tree_util.tree_leaves(shardings)):
        shape = leaf_sharding.shard_shape(leaf.shape) if leaf.shape else ()
        total += int(np.prod(shape, dtype=np.float64)) * np.dtype(leaf.dtype).itemsize
    return total


def _widths(model_config: dict, num_fields: int) -> float:
    """Floats per example a peer of `model_config` certainly holds: its embeddings and
    its hidden layers (a lower bound: products, crosses and attention come on top)."""
    dim = float(model_config.get("embedding_dim", 1) or 1)
    hidden = 0.0
    for key in ("dnn_hidden_units", "parallel_dnn_hidden_units", "stacked_dnn_hidden_units",
                "cin_hidden_units"):
        hidden += float(sum(model_config.get(key, ()) or ()))
    return num_fields * dim + hidden


def estimate(config, peers, shapes, state_shardings, mesh, num_fields: int) -> dict:
    """Bytes per device: 'state', 'params' (the best-weights copy), 'train' and 'eval'
    activations (lower bounds), 'host' (the host copy made when the state is built)."""
    params = _per_device_bytes((shapes["params"], shapes["batch_stats"]),
                               (state_shardings["params"], state_shardings["batch_stats"]))
    share = max(1, mesh.size)  # each device's share of batch x peers
    per_example = sum(g.size * _widths(config.models[g.config_key].to_dict(), num_fields)
                      for g in peers.groups)
    train = 2 * 4 * per_example * config.train.batch_size / share
    evaluation = 4 * per_example * config.train.eval_batch_size / share
    batches = 4 * num_fields * (2 * config.train.batch_size + config.train.eval_batch_size)
    state_total = sum(int(np.prod(x.shape, dtype=np.float64)) * np.dtype(x.dtype).itemsize
                      for x in jax.tree_util.tree_leaves(shapes))
    return {"state": _per_device_bytes(shapes, state_shardings), "params": params,
            "train": train, "eval": evaluation,
            "host": state_total / max(1, jax.process_count()) + batches}


def check_fits(config, peers, shapes, state_shardings, mesh, num_fields: int) -> None:
    """Refuses in one line a run whose state and activations cannot fit.

    Raises:
      RunError: the estimate per device exceeds the device limit, or the host copy
        exceeds the host's available memory; naming the estimate, its largest parts
        and the limit.
    """
    need = estimate(config, peers, shapes, state_shardings, mesh, num_fields)
    per_device = need["state"] + need["params"] + max(need["train"] + need["params"],
                                                      need["eval"])
    limit, where = device_limit_bytes()
    on_host = jax.default_backend() == "cpu"
    host_need = need["host"] + (per_device * jax.local_device_count() if on_host else 0)
    host_limit, host_where = host_available_bytes()
    parts = (f"state {_size(need['state'])}, training activations at least "
             f"{_size(need['train'])} (batch_size {config.train.batch_size}), evaluation "
             f"at least {_size(need['eval'])} (eval_batch_size "
             f"{config.train.eval_batch_size})")
    advice = ("reduce the tables (vocab.hash_buckets, embedding_dim), the hidden units, "
              "the peers or the batch sizes, or use more devices (config.mesh)")
    if limit and per_device > limit:
        raise RunError(f"the run needs at least {_size(per_device)} per "
                       f"{jax.default_backend()} device ({parts}; peers {config.peers}), more "
                       f"than the {_size(limit)} there ({where}): {advice}")
    if host_limit and host_need > host_limit:
        raise RunError(f"the run needs at least {_size(host_need)} of host memory "
                       f"({parts}; peers {config.peers}), more than the {_size(host_limit)}"
                       f" available ({host_where}): {advice}")
