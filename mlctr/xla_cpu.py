"""CPU speed-ups that change no result: host allocator settings, Threefry lowered unrolled.

Host allocator (`keep_host_allocations`, applied when mlctr is imported). XLA:CPU allocates
each execution's temporaries as one block (~100 MB for a DeepFM step at batch 4096) with
posix_memalign and frees it when the step ends. glibc serves a block that large from a
fresh mmap in the worker thread's arena (above 64 MB a non-main arena always mmaps, whatever
M_MMAP_MAX says) and unmaps it on free, so every step page-faults its whole working set
again: ~29,000 minor faults and ~40 ms of a ~230 ms step on 2 cores (measured with
getrusage; `experiments/bench_embedding.py` reports the faults per step). With one arena,
no mmap and no trimming, freed blocks stay in the process and the next step reuses them:
0 faults per step. Memory is not returned to the OS after a peak (the next step needs it
anyway); `release_host_memory()` returns it where a process drops a large model. Not
applied where JAX will run on a GPU/TPU (see `keep_host_allocations`). The cost: freed
blocks stay resident and the heap fragments, so a process whose tables fill most of the
RAM can run out where glibc's defaults fit (bench_embedding's dense-Adam step at 10M rows
x 4 peers, ~16 GB live after the other configurations of the run, was OOM-killed at
24 GB in 2 of 3 runs on a 24 GB machine). Set MLCTR_HOST_ALLOCATOR=system before
importing mlctr to keep glibc's defaults.

Threefry (`use_unrolled_threefry`). JAX lowers its Threefry-2x32 PRNG on CPU as a rolled
loop of 5 iterations (to keep compile time small); each iteration writes its intermediate
arrays to memory, so generating random bits is memory-bound. flax's dropout needs one
random word per activation -- 4096 x 1200 words per DeepFM step (DNN 400x3) -- and this
cost ~150 ms per step on a 2-core CPU, about as much as the DNN's matmuls. The unrolled
lowering (what JAX uses on GPU and TPU) fuses the 20 rounds into one elementwise kernel:
~10x faster, and the random bits are bitwise identical (same algorithm, same counters).
`tests/test_sparse.py` checks a Threefry known-answer vector.

`use_unrolled_threefry()` registers that lowering for the CPU platform; it affects functions
traced after the call (the trainer calls it when it builds the step). It relies on a JAX
internal (`jax._src.random.threefry2x32._threefry2x32_lowering`); if that is missing it
does nothing and training is just slower.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

from absl import logging

_installed = False
_allocator_tuned = None

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8

# The same settings for a child process, as GLIBC_TUNABLES (2^62: never trim), e.g. the
# DeepCTR-Torch worker of experiments/bench_vs_torch.py.
HOST_ALLOCATOR_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                           "glibc.malloc.trim_threshold=4611686018427387904")


@functools.lru_cache(maxsize=None)
def libc() -> ctypes.CDLL | None:
    """The C library (for mallopt / malloc_trim), or None where it cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_host_allocations() -> bool:
    """glibc malloc: one arena, no mmap, no trimming (see the module docstring).

    Must run before JAX starts its CPU client's threads (an existing thread keeps its
    arena); mlctr/__init__.py calls it on import. Idempotent; returns whether it is in
    effect. A no-op off Linux/glibc, with MLCTR_HOST_ALLOCATOR=system, and where JAX will
    pick a GPU or TPU (a CUDA or TPU plugin is installed and JAX_PLATFORMS does not put
    'cpu' first): there XLA's temporaries live on the device, and one arena would make the
    host's many threads share one malloc lock. MLCTR_HOST_ALLOCATOR=keep forces it on.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    choice = os.environ.get("MLCTR_HOST_ALLOCATOR", "").lower()
    if choice == "system" or (choice != "keep" and _accelerator_expected()):
        return False
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:  # not Linux/glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _allocator_tuned = all(mallopt(param, value) == 1 for param, value in (
        # -1 becomes SIZE_MAX in glibc (the value is converted to size_t): never trim. A
        # finite threshold (at most 2 GiB through this int) still returns the top of the
        # heap after steps whose temporaries exceed it (dense Adam on a 10M-row table).
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    return _allocator_tuned


def _accelerator_expected() -> bool:
    """Whether JAX's default backend will be a GPU or TPU (decided without importing jax)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] != "cpu"
    import importlib.util
    for module in ("jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13", "libtpu"):
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def keep_freed_blocks() -> None:
    """A milder setting for processes that run without `keep_host_allocations`: glibc
    reuses freed blocks of up to 32 MiB instead of unmapping them.

    The data pipeline (mlctr.data.prepare, the synthetic generator) allocates and frees
    many arrays of a few MiB per chunk in several threads. Until glibc's dynamic mmap
    threshold has grown past them each is a fresh mmap, and freed heap tops are trimmed,
    so the same pages are faulted in again and again: on a busy VM a page fault costs
    about 1 ns per byte, up to a quarter of the preparation's CPU time. This sets the
    mmap threshold to 32 MiB and the trim threshold to 64 MiB, the values glibc's own
    adjustment reaches once a 32 MiB block has been freed (its ceiling): the process
    behaves as a warmed-up one. Where `keep_host_allocations` is in effect (no mmap, no
    trimming at all) it already covers this and is left as it is: lowering the trim
    threshold there would page-fault a training step's temporaries again. Process-wide,
    idempotent; a no-op without glibc.
    """
    if keep_host_allocations():
        return
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def release_host_memory() -> bool:
    """Returns the heap's free pages to the OS (glibc malloc_trim), e.g. after dropping a
    large model in a process that builds several (the benchmarks): with the settings above
    freed memory otherwise stays resident. Returns whether anything was released."""
    malloc_trim = getattr(libc(), "malloc_trim", None)
    return bool(malloc_trim(0)) if malloc_trim is not None else False


def minor_page_faults() -> int:
    """Minor page faults of this process so far (getrusage), or -1 where unavailable."""
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except (ImportError, OSError):
        return -1


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
