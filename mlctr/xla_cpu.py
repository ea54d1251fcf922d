"""Process-wide CPU settings an entry point opts into: the host allocator and Threefry.

Importing mlctr changes nothing in the process. An entry point (`python -m mlctr.main`)
opts in by calling `configure_process()` before JAX initialises its backend; a program
that uses mlctr as a library may do the same, or leave the process as it is.

Host allocator (`host_allocator`, or MLCTR_HOST_ALLOCATOR; read by `configure_process`).
XLA:CPU allocates each execution's temporaries as one block and frees it when the step
ends; above 32 MiB glibc's defaults serve such a block from a fresh mmap and unmap it on
free, so every step page-faults its whole working set again (the main job's steps and
evaluations are such steps). The settings:

- `bounded` (the default of the entry point): `keep`'s malloc settings, so freed blocks
  stay in the process and the next step reuses them, plus a daemon thread that returns
  the heap's free pages to the OS (`release_host_memory`) when resident memory reaches a
  limit: `RELEASE_GROWTH_BYTES` (256 MiB) above the level at start, and after a return
  256 MiB above the level it left, the live memory. So the peak stays within 256 MiB of
  the live peak instead of the sum of the phases' peaks (`keep`). The limit never drops:
  once the blocks that training and evaluation take in turn fit under it they stay
  resident and are reused, so the steady state has no returns and no page faults. One
  exception: memory back at the limit within `RELEASE_REPEAT_SECONDS` of a return is a
  step's working set (a step whose temporaries exceed 256 MiB), and the limit then rises
  256 MiB above the level that set the return off; without it such a step was returned
  and faulted in on every step (docs/performance.md, "Memory").
- `keep` (opt-in): one arena, no mmap, no trimming, and nothing else: nothing freed is
  returned to the OS, so the process's peak is the sum of every phase's peaks
  (compilation, evaluation, training) and the heap fragments. For a process that runs
  one phase and wants no thread; `release_host_memory()` returns the free pages where a
  process drops a large model. Child processes get the same settings from
  `HOST_ALLOCATOR_TUNABLES` (GLIBC_TUNABLES).
- `warm`: glibc keeps freed blocks of up to 32 MiB in the heap (mmap threshold 32 MiB,
  trim threshold 64 MiB), the values glibc's own dynamic adjustment reaches once a
  32 MiB block has been freed; the data pipeline, whose blocks are a few MiB, opts into
  it (`keep_freed_blocks`). Larger blocks still fault on every step.
- `system`: glibc's defaults, untouched (what a process that never calls
  `configure_process` has).

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
import threading
import time

from absl import logging

HOST_ALLOCATORS = ("bounded", "keep", "warm", "system")
DEFAULT_HOST_ALLOCATOR = "bounded"

# `bounded`: free pages go back to the OS once resident memory is this much above the
# highest level a return has left it at (the peak's allowance over live memory for
# reused blocks), checked this often (one read of /proc/self/statm).
RELEASE_GROWTH_BYTES = 256 << 20
# `bounded`: memory back at the limit this soon after a return is a step's working set
# (a training step takes seconds at most), so the limit rises above it.
RELEASE_REPEAT_SECONDS = 10.0
RELEASE_POLL_SECONDS = 0.2

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8

# `keep` for a child process, as GLIBC_TUNABLES (2^62: never trim), e.g. the DeepCTR-Torch
# worker of experiments/benchmarks/vs_torch.py.
HOST_ALLOCATOR_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                           "glibc.malloc.trim_threshold=4611686018427387904")

_host_allocator = "system"  # what this process has: nothing is changed until asked
_threefry_unrolled = False
_releases = 0  # returns of free pages made by `bounded`'s thread


def configure_process(host_allocator: str | None = None, *,
                      unrolled_threefry: bool = True) -> str:
    """Applies mlctr's process-wide CPU settings (see the module docstring).

    Call it once at the top of an entry point, before JAX initialises its backend (JAX's
    CPU client starts its threads then, and a thread keeps the malloc arena it has).

    Args:
      host_allocator: `bounded`, `keep`, `warm` or `system`; None reads
        MLCTR_HOST_ALLOCATOR, and without it `bounded`.
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
    if host_allocator == "bounded":
        keep_host_allocations_bounded()
    elif host_allocator == "keep":
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
    whether `keep`'s malloc settings are in effect (False without glibc); under
    `bounded`, which has them, it changes nothing.
    """
    global _host_allocator
    if _host_allocator not in ("keep", "bounded") and _keep_settings():
        _host_allocator = "keep"
    return _host_allocator in ("keep", "bounded")


def keep_host_allocations_bounded(growth_bytes: int = RELEASE_GROWTH_BYTES,
                                  poll_seconds: float = RELEASE_POLL_SECONDS) -> bool:
    """The `bounded` setting: `keep`'s malloc settings and a thread that returns free
    pages once resident memory is `growth_bytes` above the highest level a return left,
    or above the level that set off a return memory came straight back from (see the
    module docstring and `_release_on_growth`).

    Process-wide and idempotent; run it before JAX starts its CPU client's threads. Where
    `keep` is in effect the thread is added. Returns whether `bounded` is in effect
    (False without glibc or without /proc/self/statm).
    """
    global _host_allocator
    if _host_allocator == "bounded":
        return True
    if resident_bytes() is None or not (_host_allocator == "keep" or _keep_settings()):
        return False
    threading.Thread(target=_release_on_growth, args=(growth_bytes, poll_seconds),
                     name="mlctr-release-host-memory", daemon=True).start()
    _host_allocator = "bounded"
    return True


def _keep_settings() -> bool:
    """`keep`'s mallopt calls (one arena, no mmap, never trim); whether all took."""
    # -1 becomes SIZE_MAX in glibc (the value is converted to size_t): never trim. A
    # finite threshold (at most 2 GiB through this int) still returns the top of the heap
    # after steps whose temporaries exceed it.
    return _mallopt((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))


def _release_on_growth(growth_bytes: int, poll_seconds: float,
                       repeat_seconds: float = RELEASE_REPEAT_SECONDS):
    """Runs forever (a daemon thread): `release_host_memory` whenever resident memory
    reaches the limit, which starts `growth_bytes` above the level at start.

    After a release the limit is `growth_bytes` above the level the release left (the
    live memory), so what a finished phase stranded goes back to the OS. When memory
    comes back to the limit within `repeat_seconds` of the last release, what was
    returned is a step's working set (its temporaries are freed, stay resident, and the
    next step takes them again): the limit then rises `growth_bytes` above the level
    that set this release off, so the steps stop returning and faulting in their
    temporaries.
    """
    global _releases
    limit = (resident_bytes() or 0) + growth_bytes
    last_release = None
    while True:
        time.sleep(poll_seconds)
        level = resident_bytes() or 0
        if level >= limit:
            release_host_memory()
            _releases += 1
            now = time.monotonic()
            repeated = last_release is not None and now - last_release < repeat_seconds
            floor = level if repeated else (resident_bytes() or 0)
            limit = max(limit, floor + growth_bytes)
            last_release = now


def host_memory_releases() -> int:
    """How many times `bounded`'s thread has returned free pages to the OS so far."""
    return _releases


def resident_bytes() -> int | None:
    """This process's resident memory now (/proc/self/statm), or None where unavailable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def keep_freed_blocks() -> bool:
    """The `warm` setting: glibc reuses freed blocks of up to 32 MiB instead of unmapping
    them (see the module docstring).

    Process-wide and idempotent. Where `keep` or `bounded` is in effect it already covers
    this and is left as it is (lowering the trim threshold there would page-fault a
    training step's temporaries again). Returns whether any of the three is in effect.
    """
    global _host_allocator
    if _host_allocator == "system" and _mallopt((_M_MMAP_THRESHOLD, 32 << 20),
                                                (_M_TRIM_THRESHOLD, 64 << 20)):
        _host_allocator = "warm"
    return _host_allocator != "system"


def release_host_memory() -> bool:
    """Returns the heap's free pages to the OS (glibc malloc_trim), e.g. after dropping a
    large model in a process that builds several (the benchmarks): with `keep` freed
    memory otherwise stays resident (`bounded` calls it itself). Returns whether anything
    was released."""
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
        # In-function: a JAX internal that a JAX version may lack (then a warning).
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
