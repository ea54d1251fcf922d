"""The device mesh: `data` splits each batch, `peer` the peers, `table` the embedding rows.

`config.mesh.data` x `config.mesh.peer` x `config.mesh.table` devices (-1: all remaining
devices, for data or peer). The default, data = -1, peer = 1, table = 1, is plain data
parallelism: every device holds all peers and a slice of each batch, and XLA averages the
gradients over `data`.

Peer parallelism (peer > 1) places the peers of a group (the leading, stacked axis of its
parameters, batch statistics and optimizer state) on different devices. Each device then
runs forward and backward only for its own peers; the one cross-peer quantity of the
mutual loss is the [N, B] matrix of logits, so the only traffic between peer slices is
each example's predictions (XLA gathers them over `peer`), and a peer's gradients never
leave its devices except for the mean over `data`. A group whose size the peer axis does
not divide is replicated over `peer` and computed redundantly on every peer slice (a
warning names it): put peers of one architecture in groups of a multiple of `mesh.peer`
(e.g. `peers=deepfm*4` on peer = 4) to split them.

Table parallelism (table > 1) splits every embedding table, and the table's optimizer
state (dense Adam's moments, the row states of mlctr/sparse.py), by rows over the `table`
devices: each holds rows/table of them (`state_shardings`). The step is unchanged: XLA's
SPMD partitioner turns the gather of a row-split table into a gather of the local rows
(out-of-shard ids masked) and a sum over `table`, and the scatter of the updated rows into
a local scatter on the device that holds them. The network's parameters stay replicated
and the batch is split over `data` x `table` (`batch_sharding`): as in DLRM, the network
is data-parallel over every device, the tables model-parallel over `table`.
JAX needs the rows to divide by `table`: `table_row_multiple` gives the padding that
`peer_groups.build_peers` adds (zero rows that no id reaches). `table` is the innermost axis,
so a table is split over the devices of one process first.

Devices are laid out process-major, so each process owns a contiguous block of the
`data` x `table` slices of a batch and reads only that block of every global batch
(`process_batch_slice`); the global arrays are assembled with
`jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

from typing import Any, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mlctr import sparse

DATA = "data"
PEER = "peer"
TABLE = "table"
AXES = (DATA, PEER, TABLE)

# Keys of the training state whose leaves are stacked per peer group (leading axis n_g).
PEER_STACKED_KEYS = ("params", "batch_stats", "opt_state")


def mesh_shape(data: int, peer: int, num_devices: int, table: int = 1) -> tuple[int, int, int]:
    """Resolves (data, peer, table) axis sizes; one of data and peer may be -1 (all remaining
    devices), table is a positive count."""
    if data == -1 and peer == -1:
        raise ValueError("at most one of mesh.data and mesh.peer may be -1")
    for name, size in ((DATA, data), (PEER, peer)):
        if size == 0 or size < -1:
            raise ValueError(f"mesh.{name} must be a positive device count or -1, got {size}")
    if table < 1:
        raise ValueError(f"mesh.{TABLE} must be a positive device count, got {table}")
    if data == -1 or peer == -1:
        known = (peer if data == -1 else data) * table
        if num_devices % known:
            other = PEER if data == -1 else DATA
            raise ValueError(f"mesh.{other} = {known // table}"
                             + (f" x mesh.{TABLE} = {table}" if table > 1 else "")
                             + f" does not divide the {num_devices} devices")
        rest = num_devices // known
        return (rest, peer, table) if data == -1 else (data, rest, table)
    if data * peer * table != num_devices:
        sizes = f"{data} x {peer}" + (f" x {table}" if table > 1 else "")
        names = "mesh.data x mesh.peer" + (" x mesh.table" if table > 1 else "")
        raise ValueError(f"{names} = {sizes} = {data * peer * table}, but there "
                         f"are {num_devices} devices (use -1 for 'all remaining devices')")
    return data, peer, table


def make_mesh(data: int = -1, peer: int = 1, devices: Sequence[Any] | None = None,
              table: int = 1) -> Mesh:
    """A (data, peer, table) mesh over `devices` (default: all devices of all processes)."""
    devices = sorted(devices if devices is not None else jax.devices(),
                     key=lambda d: (d.process_index, d.id))
    shape = mesh_shape(data, peer, len(devices), table)
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES)


def mesh_from_config(mesh_config) -> Mesh:
    """The mesh of `config.mesh`."""
    return make_mesh(int(mesh_config.data), int(mesh_config.peer),
                     table=int(mesh_config.get(TABLE, 1)))


def table_row_multiple(mesh: Mesh | None) -> int:
    """What the rows of every embedding table must be a multiple of on `mesh` (1: none)."""
    return 1 if mesh is None else int(mesh.shape.get(TABLE, 1))


def padded_table_rows(vocab_size: int, multiple: int) -> int:
    """`vocab_size` rounded up to a multiple of `multiple` (mesh.table): the rows of the
    embedding tables in the training state."""
    return -(-int(vocab_size) // int(multiple)) * int(multiple)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches: the leading (example) axis split over `data` x `table`, copies over `peer`."""
    return NamedSharding(mesh, P((DATA, TABLE)))


def peer_execution(mesh: Mesh, requested: str) -> str:
    """'auto' becomes 'vmap' on a peer-parallel mesh; otherwise the request stands.

    The unrolled loop indexes single peers out of the stacked axis, which would make XLA
    gather a peer-split axis onto every device; vmap keeps each peer on its own slice.
    """
    if requested == "auto" and mesh.shape[PEER] > 1:
        return "vmap"
    return requested


def group_is_peer_split(mesh: Mesh, group_size: int) -> bool:
    """Whether a group of `group_size` stacked peers is split over the `peer` axis."""
    peer = mesh.shape[PEER]
    return peer > 1 and group_size % peer == 0


def is_table_leaf(path) -> bool:
    """Whether a state path is an embedding table or a table's optimizer state: the path
    passes through an `embedding_table` key (params, Adam's mu/nu, sparse row states)."""
    return any(getattr(k, "key", getattr(k, "name", None)) == sparse.TABLE_NAME for k in path)


def _group_spec(mesh: Mesh, path, x, n: int, peer_split: bool) -> NamedSharding:
    """The sharding of one stacked leaf [n, ...] of a group of n peers."""
    if not (x.ndim and x.shape[0] == n):
        return replicated(mesh)
    peer = PEER if peer_split else None
    table = mesh.shape[TABLE]
    if table > 1 and x.ndim >= 2 and is_table_leaf(path):
        if x.shape[1] % table:
            raise ValueError(
                f"embedding table {jax.tree_util.keystr(path)} has {x.shape[1]} rows, not a "
                f"multiple of mesh.table = {table}: build the peers with "
                f"peer_groups.build_peers(..., table_row_multiple={table}) to pad them")
        return NamedSharding(mesh, P(peer, TABLE))
    return NamedSharding(mesh, P(PEER)) if peer_split else replicated(mesh)


def state_shardings(mesh: Mesh, state: dict, group_sizes: Sequence[int],
                    group_names: Sequence[str] | None = None) -> dict:
    """NamedShardings for a training state (see mlctr.mutual): the peer axis of each group
    split over `peer` where it divides, the rows of embedding tables and of their optimizer
    state (axis 1 of the stacked leaves) split over `table`, everything else replicated.

    Args:
      mesh: the (data, peer, table) mesh.
      state: the state or its abstract shapes (`jax.eval_shape`).
      group_sizes: peers per group, in the order of the state's group tuples.
      group_names: names for the warning about replicated groups.

    Returns:
      A pytree of NamedSharding with the structure of `state`.

    Raises:
      ValueError: a table's rows do not divide by mesh.table.
    """
    rep = replicated(mesh)
    shardings = jax.tree_util.tree_map(lambda _: rep, state)
    peer_size = mesh.shape[PEER]
    for g, n in enumerate(group_sizes):
        if peer_size > 1 and not group_is_peer_split(mesh, n):
            name = group_names[g] if group_names else f"group {g}"
            logging.warning("peer group %s has %d peers, not a multiple of mesh.peer = %d: "
                            "it is replicated over the peer axis", name, n, peer_size)
    for key in PEER_STACKED_KEYS:
        if key not in state:
            continue
        shardings[key] = tuple(
            jax.tree_util.tree_map_with_path(
                lambda path, x, n=n: _group_spec(mesh, path, x, n, group_is_peer_split(mesh, n)),
                tree)
            for tree, n in zip(state[key], group_sizes))
    return shardings


def process_batch_slice(mesh: Mesh, batch_size: int) -> tuple[int, int]:
    """Which part of each global batch this process reads.

    Returns:
      (index, count): the process reads the `index`-th of `count` equal slices of each
      global batch (the arguments `process_index`/`process_count` of the batch reader).
      Processes that share a slice of the `data` axis (peer-parallel across processes)
      read the same slice.
    """
    data, table = mesh.shape[DATA], mesh.shape[TABLE]
    if batch_size % (data * table):
        raise ValueError(f"batch size {batch_size} is not a multiple of mesh.data = {data}"
                         + (f" x mesh.table = {table}" if table > 1 else ""))
    indices = batch_sharding(mesh).addressable_devices_indices_map((batch_size,)).values()
    bounds = sorted({(s[0].start or 0, s[0].stop if s[0].stop is not None else batch_size)
                     for s in indices})
    begin, end = bounds[0][0], bounds[-1][1]
    if any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])) or (end - begin) == 0:
        raise ValueError(f"this process's devices hold a non-contiguous part {bounds} of the "
                         "batch; use a mesh whose data blocks follow the process order")
    size = end - begin
    return begin // size, batch_size // size


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray], batch_size: int) -> dict:
    """Global arrays of one batch from this process's slice of it (`process_batch_slice`)."""
    sharding = batch_sharding(mesh)
    return {key: jax.make_array_from_process_local_data(
                sharding, value, (batch_size,) + value.shape[1:])
            for key, value in local_batch.items()}


def to_host(tree):
    """numpy copies of (global) arrays on every process, gathering the peer-split ones."""

    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(one, tree)


def put(tree, shardings):
    """Places host-identical values (numpy or single-device arrays) at `shardings`.

    Every process holds the same values (same seed, same init), so going through host
    memory is valid for any sharding, also across processes.
    """
    return jax.device_put(jax.device_get(tree), shardings)
