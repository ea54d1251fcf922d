"""Shared machinery of the paper's experiments (experiments/*.py).

Every experiment is built from two kinds of run of the one trainer
(`train.train_and_evaluate`):

* `pretrain(...)`: peers trained independently (alpha = 0) from scratch with
  seed s. Cached by (config, peers, seed, step budget) under a pretrain root,
  so experiments that start from the same pretrained peers share them
  (`--pretrain_root`).
* `finetune(...)`: peers started from a pretrained run's best weights, with
  `alpha` and any mutual-learning options; the control is the same call with
  alpha = 0 (same weights, seed, data order, dropout rngs, schedule).

Seeds: seed s sets init keys, dropout rngs and the training data order of
both arms, so the arms are paired by seed and data order; the dataset split
(config.data.split_seed) is the same for all seeds.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

from absl import logging
import ml_collections

from mlctr import checkpoint
from mlctr import study
from mlctr import train

DATASET_CHOICES = ("synthetic", "shared_criteo", "shared_avazu", "criteo", "avazu")


def shared_data_dir() -> str:
    """<repo>/../shared/data, where the real Criteo/Avazu sample rows live."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(repo), "shared", "data")


def configure_dataset(config: ml_collections.ConfigDict, choice: str, root: str, raw: str = ""):
    """Points config.data at a dataset choice (one prepared dir per experiment root).

    Args:
      config: the (unlocked) config.
      choice: synthetic (generated), shared_criteo / shared_avazu (the real
        rows in ../shared/data, concatenated into <root>/data/raw), or criteo /
        avazu with `raw` the Kaggle file.
      root: experiment root directory.
      raw: the raw file for criteo / avazu.
    """
    if choice not in DATASET_CHOICES:
        raise ValueError(f"unknown dataset {choice!r}; expected one of {DATASET_CHOICES}")
    data_dir = os.path.join(root, "data", choice)
    if choice.startswith("shared_"):
        name = choice.split("_", 1)[1]
        source = os.path.join(shared_data_dir(), name)
        if not os.path.isdir(source):
            raise FileNotFoundError(f"the real {name} rows are not at {source}")
        raw = os.path.join(root, "data", "raw", f"{choice}.{'txt' if name == 'criteo' else 'csv'}")
        if not os.path.exists(raw):
            os.makedirs(os.path.dirname(raw), exist_ok=True)
            files = sorted(f for f in os.listdir(source) if f.endswith((".txt", ".csv")))
            with open(raw + ".tmp", "wb") as out:
                for k, fname in enumerate(files):
                    with open(os.path.join(source, fname), "rb") as f:
                        lines = f.read().splitlines(keepends=True)
                    if name == "avazu" and k > 0:
                        lines = lines[1:]  # one header only
                    out.writelines(lines)
            os.replace(raw + ".tmp", raw)
        choice = name
    elif choice in ("criteo", "avazu") and not raw:
        raise ValueError(f"--raw must name the Kaggle {choice} file")
    config.data.dataset = choice
    config.data.raw = raw
    config.data.data_dir = data_dir


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _results(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "results.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def run_cached(config: ml_collections.ConfigDict, run_dir: str) -> dict:
    """train_and_evaluate unless <run_dir>/results.json already exists."""
    done = _results(run_dir)
    if done is not None:
        logging.info("Reusing finished run %s", run_dir)
        return done
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)  # an unfinished run of an earlier invocation
    config.lock()
    return train.train_and_evaluate(config, run_dir)


def pretrain(base: ml_collections.ConfigDict, pretrain_root: str, seed: int, peers: str,
             max_steps: int = 0) -> tuple[str, dict]:
    """Independent training of `peers` from scratch (cached); returns (run dir, results)."""
    config = base.copy_and_resolve_references()
    with config.unlocked():
        config.mode = "train"
        config.seed = seed
        config.peers = peers
        config.mutual.alpha = 0.0
        config.init_from = ""
        config.train.max_steps = max_steps or base.train.max_steps
    keyed = {"data": config.data.to_dict(), "models": config.models.to_dict(),
             "optimizer": config.optimizer.to_dict(), "train": config.train.to_dict(),
             "peers": peers}
    if config.compute_dtype != "float32":  # (float32 runs keep the keys they always had)
        keyed["compute_dtype"] = config.compute_dtype
    key = _digest(keyed)
    tag = f"{peers.replace(',', '+')}_steps{config.train.max_steps or 'all'}_{key}_seed{seed}"
    run_dir = os.path.join(pretrain_root, tag)
    return run_dir, run_cached(config, run_dir)


def from_scratch(base: ml_collections.ConfigDict, run_dir: str, *, seed: int, peers: str,
                 alpha: float, **mutual_options) -> dict:
    """Peers trained from scratch with the pretraining schedule (cached by run_dir)."""
    config = base.copy_and_resolve_references()
    with config.unlocked():
        config.mode = "train"
        config.seed = seed
        config.peers = peers
        config.init_from = ""
        config.mutual.alpha = alpha
        for key, value in mutual_options.items():
            config.mutual[key] = value
    return run_cached(config, run_dir)


def finetune(base: ml_collections.ConfigDict, run_dir: str, *, seed: int, init_from: str,
             peers: str, alpha: float, **mutual_options) -> dict:
    """A finetune run from `init_from` (cached by run_dir); alpha = 0 is the control."""
    config = base.copy_and_resolve_references()
    with config.unlocked():
        config.mode = "train"
        config.seed = seed
        config.peers = peers
        config.init_from = init_from
        config.mutual.alpha = alpha
        for key, value in mutual_options.items():
            config.mutual[key] = value
        study.apply_finetune_schedule(config, base.finetune)
    return run_cached(config, run_dir)


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
            record = json.loads(line)
            if record.get("kind") != "eval":
                continue
            for name in names:
                if name in record["valid"]:
                    curves[name][0].append(record["step"])
                    curves[name][1].append(record["valid"][name]["auc"])
    return curves


def bayes_note(results: dict, split: str = "test") -> str:
    """A table footnote with the Bayes-optimal metrics of a synthetic split ('' otherwise)."""
    bayes = (results or {}).get("bayes", {}).get(split)
    if not bayes:
        return ""
    return (f"\n\nBayes-optimal on this synthetic {split} split (true click probabilities): "
            f"AUC {bayes['auc']:.5f}, logloss {bayes['logloss']:.5f}.")


def write_outputs(workdir: str, results: dict, table: str):
    """<workdir>/results.json and table.md (the figures are written by the caller)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table, flush=True)
