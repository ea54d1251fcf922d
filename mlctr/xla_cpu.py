"""Process-wide CPU settings an entry point opts into: the host allocator and Threefry.

Importing mlctr changes nothing in the process. An entry point (`python -m mlctr.main`)
opts in by calling `configure_process()` before JAX initialises its backend; a program
that uses mlctr as a library may do the same, or leave the process as it is.

Host allocator (`host_allocator`, or MLCTR_HOST_ALLOCATOR; read by `configure_process`):

- `warm` (the default of the entry point): glibc keeps freed blocks of up to 32 MiB in
  the heap (mmap threshold 32 MiB, trim threshold 64 MiB), the values glibc's own dynamic
  adjustment reaches once a 32 MiB block has been freed. The data pipeline and small
  training steps allocate and free many blocks of a few MiB; without this each one is a
  fresh mmap until the adjustment has caught up, and its pages are faulted in again.
  Memory use stays that of glibc's defaults.
- `system`: glibc's defaults, untouched (what a process that never calls
  `configure_process` has).
- `keep` (opt-in): one arena, no mmap, no trimming. XLA:CPU allocates each execution's
  temporaries as one block and frees it when the step ends; above 32 MiB glibc serves
  such a block from a fresh mmap (above 64 MiB a non-main arena always mmaps) and unmaps
  it on free, so every step page-faults its whole working set again. With `keep` freed
  blocks stay in the process and the next step reuses them: no faults per step, which
  pays for steps whose temporaries exceed 32 MiB (large batches, wide models). The cost:
  nothing freed is returned to the OS, so the process's peak is the sum of every phase's
  peaks (compilation, evaluation at a large batch, training) and the heap fragments;
  `release_host_memory()` returns the free pages where a process drops a large model.
  Child processes get the same settings from `HOST_ALLOCATOR_TUNABLES` (GLIBC_TUNABLES).

Threefry (`unrolled_threefry`). JAX lowers its Threefry-2x32 PRNG on CPU as a rolled loop
of 5 iterations (to keep compile time small); each iteration writes its intermediate
arrays to memory, so random bits (dropout masks, initialisers) are memory-bound. The
unrolled lowering, which JAX uses on GPU and TPU, fuses the 20 rounds into one elementwise
kernel; the random bits are bitwise identical (same algorithm, same counters;
`tests/test_sparse.py` checks a known-answer vector). `use_unrolled_threefry()`
registers it for the CPU platform, for functions traced afterwards. It relies on a JAX
internal (`jax._src.random.threefry2x32._threefry2x32_lowering`); where that is missing
it logs a warning and random bits are just slower.

Off Linux/glibc the allocator settings do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

from absl import logging

HOST_ALLOCATORS = ("warm", "system", "keep")
DEFAULT_HOST_ALLOCATOR = "warm"

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8

# `keep` for a child process, as GLIBC_TUNABLES (2^62: never trim), e.g. the DeepCTR-Torch
# worker of experiments/bench_vs_torch.py.
HOST_ALLOCATOR_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                           "glibc.malloc.trim_threshold=4611686018427387904")

_host_allocator = "system"  # what this process has: nothing is changed until asked
_threefry_unrolled = False


def configure_process(host_allocator: str | None = None, *,
                      unrolled_threefry: bool = True) -> str:
    """Applies mlctr's process-wide CPU settings (see the module docstring).

    Call it once at the top of an entry point, before JAX initialises its backend (JAX's
    CPU client starts its threads then, and a thread keeps the malloc arena it has).

    Args:
      host_allocator: `warm`, `system` or `keep`; None reads MLCTR_HOST_ALLOCATOR, and
        without it `warm`.
      unrolled_threefry: register the unrolled Threefry lowering on CPU.

    Returns:
      The host allocator setting in effect.

    Raises:
      ValueError: an unknown setting (naming MLCTR_HOST_ALLOCATOR where it came from there).
    """
    source = "host_allocator"
    if host_allocator is None:
        source = "MLCTR_HOST_ALLOCATOR"
        host_allocator = os.environ.get(source, "").strip().lower() or DEFAULT_HOST_ALLOCATOR
    if host_allocator not in HOST_ALLOCATORS:
        raise ValueError(f"{source}: expected one of {', '.join(HOST_ALLOCATORS)}, "
                         f"got {host_allocator!r}")
    if host_allocator == "keep":
        keep_host_allocations()
    elif host_allocator == "warm":
        keep_freed_blocks()
    if unrolled_threefry:
        use_unrolled_threefry()
    return _host_allocator


def host_allocator() -> str:
    """The host allocator setting in effect: `system` unless one was applied."""
    return _host_allocator


@functools.lru_cache(maxsize=None)
def libc() -> ctypes.CDLL | None:
    """The C library (for mallopt / malloc_trim), or None where it cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc mallopt for each (parameter, value); whether all were accepted."""
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:  # not Linux/glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in settings])


def keep_host_allocations() -> bool:
    """The `keep` setting: one arena, no mmap, no trimming (see the module docstring).

    Process-wide; run it before JAX starts its CPU client's threads. Idempotent; returns
    whether it is in effect (False without glibc).
    """
    global _host_allocator
    if _host_allocator != "keep" and _mallopt(
            # -1 becomes SIZE_MAX in glibc (the value is converted to size_t): never trim. A
            # finite threshold (at most 2 GiB through this int) still returns the top of the
            # heap after steps whose temporaries exceed it.
            (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)):
        _host_allocator = "keep"
    return _host_allocator == "keep"


def keep_freed_blocks() -> bool:
    """The `warm` setting: glibc reuses freed blocks of up to 32 MiB instead of unmapping
    them (see the module docstring).

    Process-wide and idempotent. Where `keep` is in effect it already covers this and is
    left as it is (lowering the trim threshold there would page-fault a training step's
    temporaries again). Returns whether `warm` or `keep` is in effect.
    """
    global _host_allocator
    if _host_allocator == "system" and _mallopt((_M_MMAP_THRESHOLD, 32 << 20),
                                                (_M_TRIM_THRESHOLD, 64 << 20)):
        _host_allocator = "warm"
    return _host_allocator != "system"


def release_host_memory() -> bool:
    """Returns the heap's free pages to the OS (glibc malloc_trim), e.g. after dropping a
    large model in a process that builds several (the benchmarks): with `keep` freed
    memory otherwise stays resident. Returns whether anything was released."""
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
    global _threefry_unrolled
    if _threefry_unrolled:
        return True
    try:
        from jax._src.random import threefry2x32 as threefry
        from jax.interpreters import mlir

        lowering = functools.partial(threefry._threefry2x32_lowering, use_rolled_loops=False)
        mlir.register_lowering(threefry.threefry2x32_p,
                               mlir.lower_fun(lowering, multiple_results=True), platform="cpu")
    except (ImportError, AttributeError, TypeError) as e:  # a JAX without this internal
        logging.warning("unrolled Threefry lowering unavailable (%s); random bits stay slow "
                        "on CPU", e)
        return False
    _threefry_unrolled = True
    return True


def unrolled_threefry_in_effect() -> bool:
    """Whether `use_unrolled_threefry` has registered its lowering in this process."""
    return _threefry_unrolled
