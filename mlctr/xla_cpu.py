"""CPU speed-up that changes no result: Threefry lowered unrolled, as on GPU/TPU.

JAX lowers its Threefry-2x32 PRNG on CPU as a rolled loop of 5 iterations (to keep compile
time small); each iteration writes its intermediate arrays to memory, so generating random
bits is memory-bound. Dropout needs one random word per activation -- 4096 x 1200 words per
DeepFM step (DNN 400x3) -- and this cost ~150 ms per step on a 2-core CPU, about as much as
the DNN's matmuls. The unrolled lowering (what JAX uses on GPU and TPU) fuses the 20 rounds
into one elementwise kernel: ~10x faster, and the random bits are bitwise identical (same
algorithm, same counters). `tests/test_sparse.py` checks a Threefry known-answer vector.

`use_unrolled_threefry()` registers that lowering for the CPU platform; it affects functions
traced after the call (the trainer calls it when it builds the step). It relies on a JAX
internal (`jax._src.random.threefry2x32._threefry2x32_lowering`); if that is missing it
does nothing and training is just slower.
"""
from __future__ import annotations

import functools

from absl import logging

_installed = False


def use_unrolled_threefry() -> bool:
    """Lowers Threefry-2x32 unrolled on CPU (idempotent). Returns whether it is in effect."""
    global _installed
    if _installed:
        return True
    try:
        from jax._src.random import threefry2x32 as threefry
        from jax.interpreters import mlir

        lowering = functools.partial(threefry._threefry2x32_lowering, use_rolled_loops=False)
        mlir.register_lowering(threefry.threefry2x32_p,
                               mlir.lower_fun(lowering, multiple_results=True), platform="cpu")
    except (ImportError, AttributeError, TypeError) as e:  # a JAX without this internal
        logging.warning("unrolled Threefry lowering unavailable (%s); dropout stays slow on CPU", e)
        return False
    _installed = True
    return True
