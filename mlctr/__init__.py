"""mlctr: mutual learning for CTR prediction in JAX/Flax."""
