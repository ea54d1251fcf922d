"""mlctr/xla_cpu.py: importing mlctr changes nothing; the entry point's opt-in does what it says."""
import os
import subprocess
import sys

import pytest

from mlctr import xla_cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")

# Prints what the process's malloc and JAX do after SETUP: whether glibc serves a 24 MiB and
# a 100 MiB block by mmap (bit 1 of the chunk's size word, just below the pointer: glibc's
# IS_MMAPPED), and whether Threefry lowers as a rolled loop (a `while` in the StableHLO).
_PROBE = """
import ctypes, jax
from mlctr import xla_cpu
{setup}
malloc = ctypes.CDLL("libc.so.6").malloc
malloc.restype, malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
def mmapped(size):
    return bool(ctypes.c_size_t.from_address(malloc(size) - ctypes.sizeof(ctypes.c_size_t)).value & 2)
rolled = "while" in jax.jit(lambda k: jax.random.bits(k, (8,))).lower(jax.random.key(0)).as_text()
print(xla_cpu.host_allocator(), mmapped(24 << 20), mmapped(100 << 20), rolled)
"""


def _probe(setup: str, **overrides) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLCTR_HOST_ALLOCATOR"}
    env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **overrides)
    out = subprocess.run([sys.executable, "-c", _PROBE.format(setup=setup)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@GLIBC
def test_importing_mlctr_changes_nothing():
    """The library, the step and the entry point's module, imported and a step built."""
    setup = """
import mlctr, mlctr.mutual, mlctr.run.train, mlctr.main
import jax.numpy as jnp, optax
peers = mlctr.peer_groups.build_peers("deepfm", {"deepfm": dict(model="deepfm", embedding_dim=2,
    dnn_hidden_units=(4,), net_dropout=0.1, batch_norm=False, embedding_regularizer=0.0,
    net_regularizer=0.0)}, vocab_size=10, num_fields=2)
optimizer = mlctr.peer_groups.make_optimizer()
state = mlctr.peer_groups.init_state(peers, jax.random.PRNGKey(0), jnp.zeros((2, 2), jnp.int32),
                                optimizer, 1e-3)
mlctr.mutual.make_train_step(peers, optimizer)
"""
    # glibc's defaults: both blocks mmapped; JAX's CPU lowering of Threefry: a loop.
    assert _probe(setup, MLCTR_HOST_ALLOCATOR="keep") == ["system", "True", "True", "True"]


@GLIBC
@pytest.mark.parametrize("setting, expected", [
    ("bounded", ["bounded", "False", "False"]),  # keep's, and a thread returns free pages
    ("warm", ["warm", "False", "True"]),    # blocks up to 32 MiB stay in the heap
    ("keep", ["keep", "False", "False"]),   # nothing is mmapped
    ("system", ["system", "True", "True"]),  # glibc's defaults
])
def test_configure_process_applies_the_setting(setting, expected):
    out = _probe("xla_cpu.configure_process()", MLCTR_HOST_ALLOCATOR=setting)
    assert out == expected + ["False"]  # and Threefry unrolled


@GLIBC
def test_configure_process_default_and_argument():
    assert _probe("xla_cpu.configure_process()")[0] == xla_cpu.DEFAULT_HOST_ALLOCATOR
    out = _probe("xla_cpu.configure_process('keep', unrolled_threefry=False)",
                 MLCTR_HOST_ALLOCATOR="system")
    assert out == ["keep", "False", "False", "True"]  # the argument wins; Threefry rolled


def test_unknown_setting_names_its_source(monkeypatch):
    monkeypatch.setenv("MLCTR_HOST_ALLOCATOR", "jemalloc")
    with pytest.raises(ValueError, match="^MLCTR_HOST_ALLOCATOR: expected one of bounded, keep, "
                                         "warm, system, got 'jemalloc'$"):
        xla_cpu.configure_process()
    with pytest.raises(ValueError, match="^host_allocator: "):
        xla_cpu.configure_process("big")


# A jitted program whose temporaries (~100 MB) exceed what glibc serves from the heap by
# default; prints the fewest minor page faults of one execution after warm-up (the previous
# execution's block may be freed only after the next one starts, so some executions still
# land on fresh pages; with glibc's defaults every one does).
_FAULTS = """
import jax, jax.numpy as jnp
from mlctr import xla_cpu
xla_cpu.configure_process()
f = jax.jit(lambda x: jnp.sum((x[::-1] + 1.0) @ x[:, :8]))  # a 100 MB temporary
x = jnp.ones((5000, 5000))
faults = []
for _ in range(12):
    before = xla_cpu.minor_page_faults()
    f(x).block_until_ready()
    faults.append(xla_cpu.minor_page_faults() - before)
print(min(faults[3:]))
"""


@GLIBC
def test_keep_and_bounded_stop_per_step_page_faults():
    def faults(setting):
        env = dict(os.environ, MLCTR_HOST_ALLOCATOR=setting, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
        return int(subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True,
                                  text=True, timeout=300, check=True).stdout.split()[-1])
    kept, warm, bounded = faults("keep"), faults("warm"), faults("bounded")
    # 100 MB of temporaries = ~25,000 pages faulted again on every execution above 32 MiB.
    assert warm > 10_000, warm
    assert kept < warm / 10, (kept, warm)
    assert bounded < warm / 10, (bounded, warm)  # the default reuses them as keep does


# Frees a 400 MB block below a live one (a hole that is not the heap's top), then needs
# 500 MB, which does not fit the hole; prints the resident growth (MiB) a second later.
_STRANDED = """
import time
import numpy as np
from mlctr import xla_cpu
xla_cpu.configure_process(unrolled_threefry=False)
start = xla_cpu.resident_bytes()
hole = np.ones(400 << 17)
above = np.ones(1 << 17)
del hole
grown = np.ones(500 << 17)
time.sleep(1.0)
print((xla_cpu.resident_bytes() - start) >> 20)
"""


@GLIBC
def test_bounded_returns_the_memory_keep_strands():
    def growth_mib(setting):
        env = dict(os.environ, MLCTR_HOST_ALLOCATOR=setting, PYTHONPATH=REPO)
        return int(subprocess.run([sys.executable, "-c", _STRANDED], env=env, check=True,
                                  capture_output=True, text=True, timeout=120).stdout.split()[-1])
    kept, bounded = growth_mib("keep"), growth_mib("bounded")
    assert kept > 850, kept  # the hole stays resident beside the new block: the peaks stack
    assert bounded < 650, bounded  # the hole returned once memory passed the limit



def _scripted_release_thread(monkeypatch, levels_mb, poll_seconds=0.2):
    """Runs `_release_on_growth` (256 MB allowance) against a scripted resident memory:
    poll k sees `levels_mb(k)` unless a release lowered it since (to `levels_mb`'s live
    level, its second value). Returns the polls at which it released."""
    mb = 1 << 20
    state = {"poll": 0, "level": levels_mb(0)[0] * mb, "released_at": []}

    class Clock:
        @staticmethod
        def sleep(_seconds):
            state["poll"] += 1
            if state["poll"] > 60:
                raise StopIteration  # ends the thread's loop for the test
            state["level"] = levels_mb(state["poll"])[0] * mb

        @staticmethod
        def monotonic():
            return state["poll"] * poll_seconds

    def release():
        state["released_at"].append(state["poll"])
        state["level"] = levels_mb(state["poll"])[1] * mb
        return True

    monkeypatch.setattr(xla_cpu, "time", Clock)
    monkeypatch.setattr(xla_cpu, "resident_bytes", lambda: state["level"])
    monkeypatch.setattr(xla_cpu, "release_host_memory", release)
    with pytest.raises(StopIteration):
        xla_cpu._release_on_growth(256 * mb, poll_seconds)
    return state["released_at"]


def test_bounded_stops_returning_a_steps_temporaries(monkeypatch):
    """Steps cycling between 1000 MB live and a 1400 MB peak (their freed temporaries stay
    resident until returned): memory back at the limit right after a return is the steps'
    working set, so the limit rises above the 1400 MB peak and they stop being returned
    (a limit above the live level alone: returned, and faulted in, at every step)."""
    released = _scripted_release_thread(
        monkeypatch, lambda poll: (1400 if poll else 1000, 1000))
    assert len(released) == 2, released


def test_bounded_returns_what_a_finished_phase_left(monkeypatch):
    """A phase leaves 500 MB stranded above 1000 MB live: it goes back and the limit stays
    256 MB above the live level, so a later phase's leftovers, long after, go back too."""
    def levels(poll):
        stranded = poll in (5, 58)  # two phases' leftovers, 10.6 s apart
        return (1500 if stranded else 1000), 1000
    released = _scripted_release_thread(monkeypatch, levels)
    assert released == [5, 58], released
