"""Process start-up: compilation cache, log filtering, multi-host JAX from the environment.

`launch.sh` sets these variables; each process then calls
`jax.distributed.initialize` before touching any device:

  MLCTR_COORDINATOR        host:port of process 0 (the coordinator)
  MLCTR_NUM_PROCESSES      total number of processes
  MLCTR_PROCESS_ID         this process's index
  MLCTR_LOCAL_DEVICE_IDS   optional, e.g. "3": the local accelerators this process
                           uses (one process per GPU); unset: all of them
  MLCTR_DISTRIBUTED=auto   instead of the above: let JAX detect the cluster (Cloud TPU VM)

With none of them set, the run is a single process and nothing happens.

With explicit variables JAX's own cluster detection is switched off: under SLURM it
would otherwise bind each process to the one GPU numbered SLURM_LOCALID, which is wrong
for one process per host.
"""
from __future__ import annotations

import logging as py_logging
import os

import jax


def initialize_from_env() -> bool:
    """Initialises jax.distributed when the environment asks for it.

    Must run before anything initialises a JAX backend (no `jax.devices()`,
    `jax.default_backend()` or array before it). Cross-process collectives on
    CPU use gloo, JAX's default.

    Returns:
      True if a multi-process runtime was initialised.
    """
    coordinator = os.environ.get("MLCTR_COORDINATOR")
    mode = os.environ.get("MLCTR_DISTRIBUTED", "")
    if coordinator:
        local = os.environ.get("MLCTR_LOCAL_DEVICE_IDS", "").strip()
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["MLCTR_NUM_PROCESSES"]),
            process_id=int(os.environ["MLCTR_PROCESS_ID"]),
            local_device_ids=[int(i) for i in local.split(",")] if local else None,
            cluster_detection_method="deactivate")
        return True
    if mode == "auto":
        jax.distributed.initialize()  # Cloud TPU VM (or another cluster JAX detects)
        return True
    if mode:
        raise ValueError(f"MLCTR_DISTRIBUTED={mode!r}: expected 'auto' or unset")
    return False


class _QuietOrbax(py_logging.Filter):
    """Drops orbax's per-save INFO chatter; warnings and errors still show."""

    def filter(self, record):
        return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def configure_runtime(compilation_cache: str = ""):
    """Persistent compilation cache (when a dir is given) and quiet orbax logs.

    Call before any computation: entry points (mlctr.main, the experiments) do.
    """
    if compilation_cache:
        jax.config.update("jax_compilation_cache_dir", compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    py_logging.getLogger("absl").addFilter(_QuietOrbax())

