"""Shared by the benchmarks (step, embedding, vs_torch, train, profile, table_sharding).

Importing it applies mlctr's process settings (`xla_cpu.configure_process`), as the
trainer's entry point does.

A `StepRun` is one jitted mutual step (mlctr.mutual.make_train_step, exactly what the
trainer runs) with its own state and a fixed stream of generated batches. `interleave`
times several runs round-robin so that a shared, noisy machine slows them alike: compare
ratios measured in one call, not absolute numbers across calls.

Generated batches: batch 4096 x 39 fields (Criteo's 13 + 26), field f drawing uniformly
from its own block of vocab_size // 39 rows, labels Bernoulli(0.25). Uniform ids are the
worst case for sparse updates (almost every id of a batch is distinct at 1M+ rows; real
CTR ids are heavy-tailed and repeat more).
"""
from __future__ import annotations

import dataclasses
import gc
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlctr import mutual, xla_cpu
from mlctr import peer_groups

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The process settings `python -m mlctr.main` applies first (host allocator from
# MLCTR_HOST_ALLOCATOR, default `warm`; unrolled Threefry for dropout's bits), so the
# benchmarks time the step users run. Every benchmark imports this module before JAX
# starts its backend; a second call (bench_train's) changes nothing.
xla_cpu.configure_process()

NUM_FIELDS = 39
BATCH_SIZE = 4096

# The peers the step benchmarks time: embedding 16, DNN 400x3, dropout
# 0.1, embedding L2 1e-5 -- the BARS structures with a DNN that 2 CPU cores train at a
# few thousand examples/s. Fixed here, not taken from mlctr/configs/default.py, so the
# benchmarks do not change when the default job is resized.
BENCH_COMMON = dict(embedding_dim=16, dnn_hidden_units=(400, 400, 400), net_dropout=0.1,
                    batch_norm=False, embedding_regularizer=1e-5, net_regularizer=0.0)
BENCH_MODELS = {
    "deepfm": dict(model="deepfm", **BENCH_COMMON),
    "dcn": dict(model="dcn", num_cross_layers=3, **BENCH_COMMON),
    "ipnn": dict(model="pnn", product_type="inner", **BENCH_COMMON),
    "fibinet": dict(model="fibinet", reduction_ratio=3, bilinear_type="field_interaction",
                    **BENCH_COMMON),
}


def make_batches(vocab_size: int, num_batches: int = 4, batch_size: int = BATCH_SIZE,
                 num_fields: int = NUM_FIELDS, seed: int = 0) -> list[dict]:
    """Fixed batches of global ids (field blocks of vocab_size // num_fields rows)."""
    rng = np.random.default_rng(seed)
    rows_per_field = vocab_size // num_fields
    offsets = np.arange(num_fields, dtype=np.int32) * rows_per_field
    return [{"ids": jnp.asarray(rng.integers(0, rows_per_field, (batch_size, num_fields),
                                             dtype=np.int32) + offsets),
             "label": jnp.asarray((rng.random(batch_size) < 0.25).astype(np.float32))}
            for _ in range(num_batches)]


@dataclasses.dataclass
class StepRun:
    """One jitted step, its state and batches; `times` collects per-step wall seconds."""

    name: str
    step: object
    state: dict
    batches: list
    num_peers: int
    compile_seconds: float = 0.0
    times: list = dataclasses.field(default_factory=list)
    cpu_times: list = dataclasses.field(default_factory=list)
    page_faults: list = dataclasses.field(default_factory=list)
    position: int = 0
    alpha: Any = 1.0            # the step's alpha and non-finite record (make_train_step)
    non_finite: Any = None

    def run(self, num_steps: int):
        for _ in range(num_steps):
            batch = self.batches[self.position % len(self.batches)]
            self.position += 1
            faults = xla_cpu.minor_page_faults()
            cpu, wall = time.process_time(), time.perf_counter()
            self.state, measurements, self.non_finite = self.step(
                self.state, batch, self.alpha, self.non_finite)
            jax.block_until_ready(measurements)
            self.times.append(time.perf_counter() - wall)
            self.cpu_times.append(time.process_time() - cpu)
            self.page_faults.append(xla_cpu.minor_page_faults() - faults)

    @property
    def faults_per_step(self) -> float:
        """Median minor page faults per step (0 when XLA's buffers are reused: xla_cpu.py)."""
        return float(np.median(self.page_faults))

    @property
    def step_seconds(self) -> float:
        """Median wall seconds per step (robust to another process stealing a core)."""
        return float(np.median(self.times))

    def release(self):
        self.state = None
        gc.collect()
        xla_cpu.release_host_memory()  # the next run's tables need the pages


def make_run(name: str, spec: str, vocab_size: int, *, embedding_optimizer: str = "dense",
             peer_execution: str = "auto", models=None, batches=None, alpha: float = 1.0,
             warmup_steps: int = 1, dtype: str = "float32") -> StepRun:
    """Builds peers `spec` over `vocab_size` rows, compiles the step and warms it up.
    `dtype` is the models' compute dtype (mlctr's `compute_dtype`)."""
    models = models if models is not None else BENCH_MODELS
    peers = peer_groups.build_peers(spec, models, vocab_size=vocab_size, num_fields=NUM_FIELDS,
                               dtype=dtype)
    optimizer = peer_groups.make_optimizer(10.0, 0.9, 0.999, 1e-8, embedding_optimizer)
    state = peer_groups.init_state(peers, jax.random.PRNGKey(0),
                              jnp.zeros((2, NUM_FIELDS), jnp.int32), optimizer, 1e-3)
    step = mutual.make_train_step(peers, optimizer, peer_execution=peer_execution)
    run = StepRun(name, step, state, batches or make_batches(vocab_size), peers.size,
                  alpha=jnp.asarray(alpha, jnp.float32),
                  non_finite=jax.device_put(mutual.finite_record(peers.size)))
    start = time.perf_counter()
    run.run(1)  # compiles
    run.compile_seconds = time.perf_counter() - start
    run.run(warmup_steps)
    run.times.clear()
    run.cpu_times.clear()
    run.page_faults.clear()
    return run


def interleave(runs: list[StepRun], rounds: int, steps_per_round: int = 1):
    """Times the runs round-robin (order reversed every other round)."""
    for r in range(rounds):
        for run in (runs if r % 2 == 0 else runs[::-1]):
            run.run(steps_per_round)


def matmul_seconds(size: tuple[int, int, int] = (4096, 1024, 1024), repeats: int = 3) -> float:
    """Median seconds of one float32 [m, k] @ [k, n] matmul (jitted, warmed up)."""
    if size not in _MATMUL_OPERANDS:
        m, k, n = size
        _MATMUL_OPERANDS[size] = (
            jnp.asarray(np.random.default_rng(1).normal(size=(m, k)), jnp.float32),
            jnp.asarray(np.random.default_rng(2).normal(size=(k, n)), jnp.float32))
        _matmul(*_MATMUL_OPERANDS[size]).block_until_ready()
    a, b = _MATMUL_OPERANDS[size]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


_MATMUL_OPERANDS = {}
_matmul = jax.jit(lambda a, b: a @ b)


def dnn_flops_per_example(input_dim: int, hidden_units, output_dim: int = 1) -> int:
    """Forward + backward FLOPs of an MLP's matmuls per example (2 per MAC, x3 for backward:
    the input gradient is needed too, it feeds the embeddings)."""
    dims = [input_dim, *hidden_units, output_dim]
    return 3 * 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def machine() -> str:
    """A line describing the host (CPU model, cores, load) and the JAX backend."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # Only read the setting: applying one here would change the allocator the entry point
    # chose (xla_cpu.configure_process) in the middle of the run.
    return (f"{model}, {os.cpu_count()} cores, load {load:.1f}; jax {jax.__version__} "
            f"{jax.default_backend()} ({jax.devices()[0].device_kind}); host allocator "
            f"{xla_cpu.host_allocator()}")
