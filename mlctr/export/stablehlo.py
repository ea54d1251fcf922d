"""StableHLO through `jax.export` (no dependency beyond JAX): `model.stablehlo`.

The serialized `jax.export.Exported` of the serving function, its batch dimension
symbolic ("batch"), so one artefact scores any batch size; load it back with
`jax.export.deserialize` (here `load`) in any process with a compatible jaxlib (JAX
keeps deserialization compatible for 6 months of releases), or run its StableHLO
module with another PJRT/XLA runtime.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

FILE = "model.stablehlo"


def export(fn, num_fields: int, platforms: tuple[str, ...] = ("cpu",)) -> jax.export.Exported:
    """fn (ids int32 [b, F] -> [b]) exported with a symbolic batch for `platforms`."""
    batch = jax.export.symbolic_shape("batch")[0]
    return jax.export.export(jax.jit(fn), platforms=platforms)(
        jax.ShapeDtypeStruct((batch, num_fields), jnp.int32))


def save(served, out_dir: str, *, platforms: tuple[str, ...] = ("cpu",)) -> dict:
    """Writes `model.stablehlo`; returns what the manifest records of it."""
    exported = export(served.fn, served.num_fields, platforms)
    with open(os.path.join(out_dir, FILE), "wb") as f:
        f.write(exported.serialize())
    return {"model_file": FILE, "platforms": list(exported.platforms),
            "calling_convention_version": exported.calling_convention_version}


def load(export_dir: str):
    """ids int32 [b, F] (numpy) -> probabilities float32 [b] of a saved export."""
    with open(os.path.join(export_dir, FILE), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    call = jax.jit(exported.call)
    return lambda ids: np.asarray(call(np.asarray(ids, np.int32)))
