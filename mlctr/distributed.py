"""Multi-process (multi-host) JAX start-up from the launcher's environment.

`launch.sh` sets these variables; each process then calls
`jax.distributed.initialize` before touching any device:

  MLCTR_COORDINATOR    host:port of process 0 (the coordinator)
  MLCTR_NUM_PROCESSES  total number of processes
  MLCTR_PROCESS_ID     this process's index
  MLCTR_DISTRIBUTED=auto  let JAX detect the cluster (SLURM, Cloud TPU VM)

With none of them set, the run is a single process and nothing happens.
"""
from __future__ import annotations

import os

import jax


def initialize_from_env() -> bool:
    """Initialises jax.distributed when the environment asks for it.

    Returns:
      True if a multi-process runtime was initialised.
    """
    coordinator = os.environ.get("MLCTR_COORDINATOR")
    mode = os.environ.get("MLCTR_DISTRIBUTED", "")
    if not coordinator and mode != "auto":
        return False
    if jax.default_backend() == "cpu" or os.environ.get("JAX_PLATFORMS", "") == "cpu":
        # CPU collectives across processes need gloo (XLA's default is none).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["MLCTR_NUM_PROCESSES"]),
            process_id=int(os.environ["MLCTR_PROCESS_ID"]))
    else:
        jax.distributed.initialize()  # SLURM / Cloud TPU auto-detection
    return True
