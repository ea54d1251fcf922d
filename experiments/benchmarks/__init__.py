"""Benchmarks (not tests): speed and memory of mlctr's step, trainer and data pipeline, and
against DeepCTR-Torch and FuxiCTR. Each runs with `python -m experiments.benchmarks.<name>`
from the repository root and prints one JSON line last; docs/performance.md holds the
numbers and the methodology.

`lib` (the shared workload, `StepRun`, round-robin timing) applies mlctr's process settings
when imported; this package's import does nothing, so that the workers of `vs_torch` and
`vs_fuxictr` run in environments without JAX.
"""
