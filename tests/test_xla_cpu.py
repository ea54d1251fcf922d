"""mlctr/xla_cpu.py: the host allocator settings keep XLA's per-step buffers mapped."""
import os
import subprocess
import sys

import pytest

from mlctr import xla_cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A jitted program whose temporaries (~100 MB, as a DeepFM step at batch 4096) exceed what
# glibc serves from a thread's heap; prints the fewest minor page faults of one execution
# after warm-up (the previous execution's block may be freed only after the next one starts,
# so some executions still land on fresh pages; with glibc's defaults every one does).
_PROGRAM = """
import mlctr, jax, jax.numpy as jnp
from mlctr import xla_cpu
xla_cpu.keep_freed_blocks()  # as mlctr.data.prepare calls it inside a training process
f = jax.jit(lambda x: jnp.sum((x[::-1] + 1.0) @ x[:, :8]))  # a 100 MB temporary
x = jnp.ones((5000, 5000))
faults = []
for _ in range(12):
    before = xla_cpu.minor_page_faults()
    f(x).block_until_ready()
    faults.append(xla_cpu.minor_page_faults() - before)
print(xla_cpu.keep_host_allocations(), min(faults[3:]))
"""


def _run(allocator: str) -> tuple[str, int]:
    env = dict(os.environ, MLCTR_HOST_ALLOCATOR=allocator, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _PROGRAM], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    return out[-2], int(out[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_kept_allocations_stop_per_step_page_faults():
    tuned, tuned_faults = _run("")
    system, system_faults = _run("system")
    assert (tuned, system) == ("True", "False")
    # 100 MB of temporaries = ~25,000 pages faulted again on every execution by default.
    assert system_faults > 10_000, system_faults
    assert tuned_faults < system_faults / 10, (tuned_faults, system_faults)


def test_allocator_setting_is_idempotent():
    assert xla_cpu.keep_host_allocations() == xla_cpu.keep_host_allocations()


def test_not_applied_where_an_accelerator_is_expected():
    """JAX_PLATFORMS decides first; 'keep' forces the settings on."""
    program = "import mlctr; from mlctr import xla_cpu; print(xla_cpu.keep_host_allocations())"
    for platforms, allocator, expected in (("cuda", "", "False"), ("cpu", "", "True"),
                                           ("tpu,cpu", "keep", "True")):
        env = dict(os.environ, JAX_PLATFORMS=platforms, MLCTR_HOST_ALLOCATOR=allocator,
                   PYTHONPATH=REPO)
        out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                             text=True, timeout=120, check=True).stdout.split()
        assert out[-1] == expected, (platforms, allocator, out)
