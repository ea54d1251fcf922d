"""mlctr: mutual learning for CTR prediction in JAX/Flax."""
from mlctr import xla_cpu as _xla_cpu

# Before JAX creates its CPU threads: on CPU runs, keep XLA's per-step host buffers instead
# of unmapping and page-faulting them every step (~20% of a CPU step; mlctr/xla_cpu.py).
_xla_cpu.keep_host_allocations()
