"""The runs of a study as replicas of one program (mlctr/run/replicas.py), or one by one.

`run_all` takes the (config, run dir) of every run a runner needs — every seed's
pretraining, then every seed's control and mutual finetune — and returns each run's
results as `paper.run_cached` would: a finished run is reused (the same cache check), and
the rest train as replicas of one program where they can, one by one where not:

* `--noreplicas`, or several processes (a replica program runs on one device);
* a run directory holding checkpoints of an interrupted run: the trainer resumes it;
* runs that differ in more than the replica keys (seed, alpha, learning rate,
  init_from) go to separate programs, one per group of compatible runs.

Either way each run directory ends up the same (results.json, best/, metrics.jsonl), so
the tables and results.json built from them are today's, and a study may be resumed
by the other way.
"""
from __future__ import annotations

import os
from typing import Sequence

from absl import flags
from absl import logging
import jax
import ml_collections

from experiments import paper
from mlctr.run import inputs
from mlctr.run import replicas

FLAGS = flags.FLAGS
# Off by default until the replica loop has what the single-run loop has
# (step-0 evaluation of a finetune, per-peer schedule settings, broken-prediction checks,
# recomputed batch-norm statistics): a study must not depend on the execution path.
flags.DEFINE_boolean("replicas", False, "Train a study's seeds and arms as replicas of one "
                     "program where they fit in memory (default: one run after another).")
flags.DEFINE_integer("max_replicas", 0, "Replicas per program (0: as many as fit in memory).")
flags.DEFINE_enum("replica_execution", "vmap", replicas.EXECUTIONS,
                  "vmap: one batched program; unroll: bitwise the runs alone on CPU, a "
                  "program per replica to compile.")


def _interrupted(run_dir: str) -> bool:
    return os.path.isdir(os.path.join(run_dir, "checkpoints"))


def _groups(todo: Sequence[int], configs) -> list[list[int]]:
    """The runs `todo` split into groups that may share one program."""
    groups: list[list[int]] = []
    for i in todo:
        for group in groups:
            try:
                replicas.check_compatible([replicas.Replica(configs[group[0]], "a"),
                                           replicas.Replica(configs[i], "b")])
            except ValueError:
                continue
            group.append(i)
            break
        else:
            groups.append([i])
    return groups


def run_all(runs: Sequence[tuple[ml_collections.ConfigDict, str]], *,
            use_replicas: bool | None = None, max_size: int | None = None,
            execution: str | None = None) -> list[dict]:
    """Each run's results, in order: reused, or trained as replicas or one by one.

    Args:
      runs: (config, run dir) of each run (the configs are locked here).
      use_replicas, max_size, execution: replica programs where possible, replicas per
        program, 'vmap' or 'unroll'; None: the --replicas, --max_replicas and
        --replica_execution flags (their defaults when the flags are not parsed).
    """
    flag = lambda name: FLAGS[name].value if FLAGS.is_parsed() else FLAGS[name].default
    use_replicas = flag("replicas") if use_replicas is None else use_replicas
    max_size = flag("max_replicas") if max_size is None else max_size
    execution = flag("replica_execution") if execution is None else execution
    configs = [config for config, _ in runs]
    results: list[dict | None] = [None] * len(runs)
    todo = []
    for i, (config, run_dir) in enumerate(runs):
        config.lock()
        results[i] = paper._finished(config, run_dir)  # pylint: disable=protected-access
        if results[i] is not None:
            logging.info("Reusing finished run %s", run_dir)
        else:
            todo.append(i)
    if not use_replicas or jax.process_count() > 1:
        alone, together = todo, []
    else:
        alone = [i for i in todo if _interrupted(runs[i][1])]
        together = [i for i in todo if i not in alone]
    for i in alone:
        results[i] = paper.run_cached(*runs[i])
    for group in _groups(together, configs):
        config, run_dir = runs[group[0]]
        inputs.ensure_prepared(config, run_dir)
        trained = replicas.train_replicas(
            [replicas.Replica(*runs[i]) for i in group], max_size=max_size, execution=execution)
        for i, result in zip(group, trained):
            results[i] = result
    return results
