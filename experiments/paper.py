"""Runs of the paper's experiments: cached, resumable, paired by seed.

Every experiment is built from one kind of run of the one trainer
(`train.train_and_evaluate`), `run(...)`:

* from scratch (no `init_from`): peers trained with the pretraining schedule;
  alpha = 0 is independent training. `pretrain(...)` is this run with alpha 0,
  cached by (config, peers, seed, step budget) under a pretrain root, so
  experiments that start from the same pretrained peers share them
  (`--pretrain_root`).
* a finetune (`init_from` a run's best weights): `config.finetune`'s schedule,
  `alpha` and any mutual-learning options; the control is the same call with
  alpha = 0 (same weights, seed, data order, dropout rngs, schedule).

The phase schedules come from mlctr/study.py (`pretrain_config`,
`finetune_config`), the library's finetune study, so the two never drift apart.

Seeds: seed s sets init keys, dropout rngs and the training data order of
both arms, so the arms are paired by seed and data order; the dataset split
(config.data.split_seed) is the same for all seeds.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from absl import logging
import ml_collections

from mlctr import atomic
from mlctr.run import checkpoint
from mlctr.run import resume
from mlctr import peer_groups
from mlctr import study
from mlctr.run import inputs
from mlctr.run import train
# Each peer's test probabilities from a run's best weights (for DeLong's test).

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


class ExperimentError(ValueError):
    """A work dir whose runs belong to another config; its message is one complete line
    (experiments.common prints it so, without a traceback)."""


# The base config an experiment's work dir was first run with (experiments.common.setup).
EXPERIMENT_RECORD = "experiment.json"


def config_mismatch(saved: dict, current: dict) -> list[str]:
    """Config keys whose values differ between a finished run and a config, with both."""
    differences = resume.config_differences(saved, current)
    # The trainer may resume with a new step budget; a finished result may not be reused.
    for key in ("num_epochs", "max_steps"):
        if saved.get("train", {}).get(key) != current["train"][key]:
            differences.append(f"train.{key}: run {saved.get('train', {}).get(key)!r}, "
                               f"config {current['train'][key]!r}")
    return differences


def check_workdir(config: ml_collections.ConfigDict, workdir: str, flags: dict) -> None:
    """Refuses at once a work dir first run with another base config or dataset flags.

    Without it, a finished run of another config was found only when its turn came,
    after the dataset was prepared and earlier runs trained (40 s for the avazu
    variant), and as a traceback. The first call records the base config
    and flags in `<workdir>/experiment.json`; later calls compare with it.

    Raises:
      ExperimentError: one line naming what differs and the record.
    """
    path = os.path.join(workdir, EXPERIMENT_RECORD)
    current = {"config": json.loads(config.to_json_best_effort()), "flags": flags}
    if not os.path.exists(path):
        atomic.write_json(path, current, indent=1)
        return
    try:
        with open(path) as f:
            saved = json.load(f)
        differences = config_mismatch(saved["config"], current["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ExperimentError(f"{path}: unreadable experiment record ({e}); move it away "
                              "or choose another --workdir") from None
    differences += [f"--{k}: run {saved.get('flags', {}).get(k)!r}, now {v!r}"
                    for k, v in flags.items() if saved.get("flags", {}).get(k) != v]
    if differences:
        raise ExperimentError(f"{workdir} holds the runs of another experiment config "
                              f"({'; '.join(differences[:3])}; recorded in {path}); move it "
                              "away or choose another --workdir")


def _finished(config: ml_collections.ConfigDict, run_dir: str) -> dict | None:
    """A finished run's results if <run_dir> holds one made with `config`.

    Raises:
      ValueError: the finished run was made with a different config (one line
        naming the run and the keys that differ), so a stale result is never reused.
    """
    path = os.path.join(run_dir, "results.json")
    if not os.path.exists(path):
        return None
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    current = config.to_dict()
    if not current.get("init_from"):
        # A run from scratch never reads the finetune schedule: pretrained peers stay
        # shared by experiments that finetune them differently.
        saved.pop("finetune", None)
        current.pop("finetune", None)
    differences = config_mismatch(saved, current)
    if differences:
        raise ExperimentError(f"{run_dir} holds a finished run of another config ("
                              f"{'; '.join(differences[:3])}); move it away or choose another "
                              "--workdir")
    with open(path) as f:
        return json.load(f)


def run_cached(config: ml_collections.ConfigDict, run_dir: str) -> dict:
    """The results of `config` in `run_dir`: reused if finished, else trained.

    An unfinished run (interrupted, no results.json) is resumed from its newest
    checkpoint by the trainer, never deleted.
    """
    config.lock()
    done = _finished(config, run_dir)
    if done is not None:
        logging.info("Reusing finished run %s", run_dir)
        return done
    if os.path.isdir(run_dir):
        logging.info("Resuming unfinished run %s", run_dir)
    inputs.ensure_prepared(config, run_dir)
    return train.train_and_evaluate(config, run_dir)


def run_config(base: ml_collections.ConfigDict, *, seed: int, peers: str, alpha: float = 0.0,
               init_from: str = "", max_steps: int = 0,
               **mutual_options) -> ml_collections.ConfigDict:
    """The config of one run (`run`'s arguments), unlocked."""
    config = study.pretrain_config(base)
    with config.unlocked():
        config.seed = seed
        config.peers = peers
        if max_steps:
            config.train.max_steps = max_steps
    if init_from:
        config = study.finetune_config(config, init_from, alpha)
    with config.unlocked():
        config.mutual.alpha = alpha
        for key, value in mutual_options.items():
            config.mutual[key] = value
    return config


def run(base: ml_collections.ConfigDict, run_dir: str, *, seed: int, peers: str,
        alpha: float = 0.0, init_from: str = "", max_steps: int = 0,
        **mutual_options) -> dict:
    """One run (cached by run_dir): from scratch, or a finetune from `init_from`.

    Args:
      base: the experiment's config.
      run_dir: the run directory.
      seed: init keys, dropout rngs and data order.
      peers: comma-separated peers.
      alpha: weight of the mutual term (0: independent).
      init_from: a run whose best weights start the peers, with the finetune
        schedule; '' trains from scratch with the pretraining schedule.
      max_steps: a step budget (0: the schedule's own).
      **mutual_options: other config.mutual fields (divergence, frozen_peers, ...).
    """
    return run_cached(run_config(base, seed=seed, peers=peers, alpha=alpha, init_from=init_from,
                                 max_steps=max_steps, **mutual_options), run_dir)


def pretrain_run(base: ml_collections.ConfigDict, pretrain_root: str, seed: int, peers: str,
                 max_steps: int = 0) -> tuple[str, ml_collections.ConfigDict]:
    """(run dir, config) of the cached independent pretraining of `peers` from scratch."""
    config = study.pretrain_config(base)
    data = config.data.to_dict()
    if not data.get("feature_spec"):  # (runs without a csv spec keep the keys they had)
        data.pop("feature_spec", None)
    keyed = {"data": data, "models": config.models.to_dict(),
             "optimizer": config.optimizer.to_dict(),
             "train": {**config.train.to_dict(), "max_steps": max_steps or base.train.max_steps},
             "peers": peers}
    if config.compute_dtype != "float32":  # (float32 runs keep the keys they always had)
        keyed["compute_dtype"] = config.compute_dtype
    steps = max_steps or base.train.max_steps or "all"
    tag = f"{peers.replace(',', '+')}_steps{steps}_{_digest(keyed)}_seed{seed}"
    return (os.path.join(pretrain_root, tag),
            run_config(base, seed=seed, peers=peers, max_steps=max_steps))


def pretrain(base: ml_collections.ConfigDict, pretrain_root: str, seed: int, peers: str,
             max_steps: int = 0) -> tuple[str, dict]:
    """Independent training of `peers` from scratch (cached); returns (run dir, results)."""
    run_dir, config = pretrain_run(base, pretrain_root, seed, peers, max_steps)
    return run_dir, run_cached(config, run_dir)


def combine_weights(sources: dict[str, str], out_dir: str) -> str:
    """Writes a best-weights dir holding peer -> weights taken from different runs."""
    if checkpoint.peer_weights_exist(out_dir):
        return out_dir
    weights = {}
    for name, run_dir in sources.items():
        weights.update(checkpoint.load_peer_weights(run_dir, [name]))
    checkpoint.save_peer_weights(out_dir, weights, extra={"sources": sources})
    return out_dir


def learning_curves(run_dir: str, names: list[str]) -> dict[str, tuple[list, list]]:
    """{peer: (steps, valid AUCs)} from a run's metrics.jsonl."""
    curves = {name: ([], []) for name in names}
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return curves
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a torn last line of an interrupted run
                continue
            if record.get("kind") != "eval":
                continue
            for name in names:
                if name in record["valid"]:
                    curves[name][0].append(record["step"])
                    curves[name][1].append(record["valid"][name]["auc"])
    return curves


def write_outputs(workdir: str, results: dict, table: str):
    """<workdir>/results.json and table.md (the figures are written by the caller)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table, flush=True)


def name_peers(config, spec: str) -> list[str]:
    """The peers of a peer spec (peer_groups.parse_peer_spec: 'deepfm*4' is four), each under a
    config key of its own.

    The runners pretrain, combine and finetune peers by name, so a key used k > 1 times
    becomes k copies of its hyperparameter set in config.models, under the names the
    trainer gives such peers (peer_groups.peer_names: deepfm_0 ... deepfm_3); each copy is its
    own peer, with its own initialisation, as in a stacked group.
    """
    keys = peer_groups.parse_peer_spec(spec)
    names = peer_groups.peer_names(keys)
    with config.unlocked():
        for key, name in zip(keys, names):
            if name == key:
                continue
            if name in config.models and config.models[name].to_dict() != \
                    config.models[key].to_dict():
                raise ValueError(f"peer spec {spec!r}: {key!r} repeated names its copies "
                                 f"{name!r}, which config.models holds as another set")
            config.models[name] = config.models[key].to_dict()
    return names
