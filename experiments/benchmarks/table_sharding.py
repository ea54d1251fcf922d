"""Embedding tables split over the `table` mesh axis vs replicated, on 4 CPU devices.

For each table size and embedding optimizer: the trainer's sharded step
(`mutual.make_train_step`) on the mesh table = 4 (tables split by rows) and on data = 4
(tables replicated, plain data parallelism); both split the batch over the 4 devices, so
they differ only in where the table rows live. Timed round-robin (`lib.interleave`).
Memory per device: the bytes of the live arrays' shards on each device once the state is
placed (`jax.live_arrays`; XLA:CPU has no memory_stats).

It also times the two ways JAX offers to run the table part of the sparse step, the
gather of a batch's K distinct rows from a row-split table and the scatter of their new
values: the XLA SPMD partitioner on NamedShardings (what the step uses) and an explicit
`shard_map` (local masked gather, psum over `table`; local scatter).

The shape (fits 24 GB with 2 cores): one DeepFM peer, embedding 8, DNN 256x2, batch 1024 x
4 fields, 1M and 10M table rows. The 4 devices share the machine's cores, so the step
times measure the partitioned program's overhead, not a speed-up.

    python -m experiments.benchmarks.table_sharding [--rows 1000000,10000000] [--rounds 5]

The last line printed is one JSON object with every number.
"""
from __future__ import annotations

import collections
import functools
import json
import os
import re
import time

from absl import app, flags
import types

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from experiments.benchmarks import lib  # noqa: E402  (mlctr's process settings)
from mlctr import mutual, sharding, sparse  # noqa: E402
from mlctr import peer_groups

FIELDS, BATCH, DIM = 4, 1024, 8
MODELS = {"deepfm": dict(model="deepfm", embedding_dim=DIM, dnn_hidden_units=(256, 256),
                         net_dropout=0.1, batch_norm=False, embedding_regularizer=1e-5,
                         net_regularizer=0.0)}


def device_bytes() -> dict[str, int]:
    """Bytes of live array shards held on each device."""
    per_device = collections.Counter()
    for array in jax.live_arrays():
        for shard in array.addressable_shards:
            per_device[str(shard.device)] += shard.data.nbytes
    return dict(per_device)


def collectives(step, state, batch, alpha, non_finite) -> dict[str, int]:
    """Count of each collective op in the compiled step (what crosses devices)."""
    text = step.lower(state, batch, alpha, non_finite).compile().as_text()
    ops = re.findall(r" (all-reduce|all-gather|all-to-all|reduce-scatter|"
                     r"collective-permute)(?:-start)?\(", text)
    return dict(collections.Counter(ops))


def build(rows: int, table: int, embedding_optimizer: str, batches):
    """A StepRun of the trainer's step on 4 devices: data = 4 // table x table."""
    mesh = sharding.make_mesh(4 // table, 1, table=table)
    peers = peer_groups.build_peers("deepfm", MODELS, vocab_size=rows, num_fields=FIELDS,
                               table_row_multiple=sharding.table_row_multiple(mesh))
    optimizer = peer_groups.make_optimizer(10.0, 0.9, 0.999, 1e-8, embedding_optimizer)
    shapes = jax.eval_shape(lambda: peer_groups.init_state(
        peers, jax.random.PRNGKey(0), jnp.zeros((2, FIELDS), jnp.int32), optimizer, 1e-3))
    shardings = sharding.state_shardings(mesh, shapes, [1])
    state = jax.jit(lambda key: peer_groups.init_state(
        peers, key, jnp.zeros((2, FIELDS), jnp.int32), optimizer, 1e-3),
        out_shardings=shardings)(jax.random.PRNGKey(0))
    step = mutual.make_train_step(peers, optimizer, mesh=mesh, state_shardings=shardings)
    rep = sharding.replicated(mesh)
    alpha = jax.device_put(np.float32(1.0), rep)
    non_finite = jax.device_put(mutual.finite_record(1), rep)
    placed = [{k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in b.items()}
              for b in batches]
    ops = collectives(step, state, placed[0], alpha, non_finite)

    run = lib.StepRun(f"{embedding_optimizer} table={table}", step, state, placed, 1,
                      alpha=alpha, non_finite=non_finite)
    start = time.perf_counter()
    run.run(1)
    run.compile_seconds = time.perf_counter() - start
    run.run(1)
    run.times.clear()
    return run, ops


def gather_scatter_engines(rows: int, rounds: int) -> dict[str, float]:
    """Median seconds of one gather + scatter of a batch's distinct rows from a table split
    over table = 4: XLA-partitioned (NamedSharding) vs shard_map."""
    mesh = sharding.make_mesh(1, 1, table=4)
    split = NamedSharding(mesh, P(sharding.TABLE))
    table = jax.device_put(jnp.zeros((rows, 2 * DIM + 1), jnp.float32), split)  # lazy slots
    ids = lib.make_batches(rows, 1, BATCH, FIELDS)[0]["ids"]
    keys = jax.device_put(sparse.batch_rows(ids, rows).rows, sharding.replicated(mesh))

    @functools.partial(jax.jit, donate_argnums=0)
    def partitioned(table, keys):
        got = sparse.take_rows(table, keys, zero_padding=False)
        return sparse.put_rows(table, keys, got + 1.0)

    def local(table, keys):
        start = jax.lax.axis_index(sharding.TABLE) * table.shape[0]
        index = keys - start
        mine = (index >= 0) & (index < table.shape[0])
        got = jnp.where(mine[:, None], jnp.take(table, index, axis=0, mode="clip"), 0.0)
        got = jax.lax.psum(got, sharding.TABLE)
        index = jnp.where(mine, index, table.shape[0])  # out of range: dropped
        return table.at[index].set(got + 1.0, mode="drop", unique_indices=True)

    explicit = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(sharding.TABLE), P()),
                                     out_specs=P(sharding.TABLE)), donate_argnums=0)
    times = {"xla_partitioned": [], "shard_map": []}
    fns = {"xla_partitioned": partitioned, "shard_map": explicit}
    for name in fns:  # compile and warm up
        table = fns[name](table, keys).block_until_ready()
    for r in range(rounds * 4):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            start = time.perf_counter()
            table = fns[name](table, keys).block_until_ready()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined when run, not on import: the tests import some benchmarks' functions
    # beside other modules' flags.
    flags.DEFINE_string("rows", "1000000,10000000", "comma-separated table rows")
    flags.DEFINE_string("optimizers", "lazy_adam,dense", 'comma-separated embedding optimizers')
    flags.DEFINE_integer("rounds", 5, "timed rounds of each run")


def main(argv) -> dict:
    del argv
    args = types.SimpleNamespace(**FLAGS.flag_values_dict())
    assert len(jax.devices()) == 4, f"needs 4 devices, got {jax.devices()}"
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        batches = lib.make_batches(rows, 4, BATCH, FIELDS)
        for name in args.optimizers.split(","):
            entry = {"rows": rows, "embedding_optimizer": name}
            runs = []
            for table in (1, 4):
                before = device_bytes()
                run, ops = build(rows, table, name, batches)
                after = device_bytes()
                held = {d: after.get(d, 0) - before.get(d, 0) for d in after}
                entry[f"table{table}"] = {"state_bytes_per_device": max(held.values()),
                                          "compile_s": round(run.compile_seconds, 2),
                                          "collectives": ops}
                runs.append(run)
            lib.interleave(runs, args.rounds)
            for table, run in zip((1, 4), runs):
                entry[f"table{table}"]["step_ms"] = round(1e3 * run.step_seconds, 2)
                run.release()
            entry["memory_ratio"] = round(entry["table1"]["state_bytes_per_device"]
                                          / entry["table4"]["state_bytes_per_device"], 3)
            entry["step_time_ratio"] = round(entry["table4"]["step_ms"]
                                             / entry["table1"]["step_ms"], 3)
            print(json.dumps(entry), flush=True)
            results.append(entry)
        engines = gather_scatter_engines(rows, args.rounds)
        print(json.dumps({"rows": rows, "gather_scatter_ms": {
            k: round(1e3 * v, 3) for k, v in engines.items()}}), flush=True)
        results.append({"rows": rows, "gather_scatter_s": engines})
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    summary = {"benchmark": "table_sharding", "devices": 4, "shape": {
        "peers": "deepfm", "embedding_dim": DIM, "dnn_hidden_units": [256, 256],
        "batch": BATCH, "fields": FIELDS}, "results": results, "loadavg": load,
        "machine": lib.machine()}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    _define_flags()
    app.run(main)
