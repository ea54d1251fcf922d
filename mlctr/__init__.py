"""mlctr: mutual learning for CTR prediction in JAX/Flax.

Importing it changes nothing in the process; entry points opt into the CPU settings of
`mlctr.xla_cpu` with `xla_cpu.configure_process()`.
"""
