"""Benchmarks run as modules: `python -m experiments.benchmarks.<name>` (absl flags)."""
