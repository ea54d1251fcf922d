"""validate(config): nonsense settings fail at the start with one line naming the key.

A locked ConfigDict already rejects misspelled keys and wrong types; this checks the
values: `train.batch_size=-5` or `num_epochs=0` would otherwise run 0 steps and write a
results table of untrained models, `mutual.alpha=-1` would push peers apart, and
`log_steps=0` would end in a ZeroDivisionError deep in the loop. Each error reads
`config.<key>: <what is wrong> (got <value>)`.

Keys a config does not have are skipped: the trainer names a missing key itself.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import ml_collections

from mlctr import models as model_zoo
from mlctr import mutual
from mlctr import peer_groups
from mlctr import sparse
from mlctr.configs import peer_schedule
from mlctr.data.prepare.options import ALL_PROTOCOLS, DATASETS, VOCAB_MODES, protocol_problem
from mlctr.models import qr

_MISSING = object()

# Legal names that no module holds as a constant (the others come from their modules).
MODES = ("train", "finetune_study")                  # mlctr/main.py
MONITORS = ("auc", "auc-logloss")                    # mlctr/metrics.py
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
# EKTF was `mutual.divergence='ektf'` before it got its own key: old configs meet this line.
_EKTF_MOVED = "; EKTF is not a divergence: config.mutual.transfer='ektf' selects it"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v) -> bool:
    return _is_int(v) and v > 0


def _non_negative_int(v) -> bool:
    return _is_int(v) and v >= 0


def _positive_number(v) -> bool:
    return _is_number(v) and v > 0


def _non_negative_number(v) -> bool:
    return _is_number(v) and v >= 0


def _one_of(names) -> Callable[[Any], bool]:
    return lambda v: v in names


def _devices(v) -> bool:
    return _is_int(v) and (v == -1 or v >= 1)


def _rules() -> list[tuple[str, Callable[[Any], bool], str]]:
    """(key, is_legal, what a legal value is) for every field with a value constraint."""
    return [
        ("mode", _one_of(MODES), f"must be one of {MODES}"),
        ("seed", _is_int, "must be an integer"),
        ("data.dataset", _one_of(DATASETS), f"must be one of {DATASETS}"),
        ("data.protocol", _one_of(ALL_PROTOCOLS), f"must be one of {ALL_PROTOCOLS}"),
        ("data.feature_spec", lambda v: isinstance(v, str), "must be a string (the JSON "
         "file of a csv dataset's columns; empty: none)"),
        ("data.num_rows", _non_negative_int, "must be an integer >= 0"),
        ("vocab.mode", _one_of(VOCAB_MODES), f"must be one of {VOCAB_MODES}"),
        ("vocab.hash_buckets", _positive_int, "must be an integer >= 1"),
        ("vocab.field_buckets", lambda v: isinstance(v, str), "must be a string "
         "'name=count,...' (empty: none)"),
        ("vocab.max_rows", lambda v: _non_negative_int(v) and v != 1,
         "must be 0 (no cap) or an integer >= 2"),
        ("vocab.qr_collisions", lambda v: _non_negative_int(v) and v != 1,
         "must be 0 (off) or an integer >= 2 (ids per quotient row)"),
        ("vocab.qr_combiner", _one_of(qr.COMBINERS), f"must be one of {qr.COMBINERS}"),
        ("compute_dtype", _one_of(COMPUTE_DTYPES), f"must be one of {COMPUTE_DTYPES}"),
        ("mutual.alpha", _non_negative_number, "must be a finite number >= 0 (0: independent)"),
        ("mutual.divergence", _one_of(mutual.DIVERGENCES),
         f"must be one of {mutual.DIVERGENCES}" + _EKTF_MOVED),
        ("mutual.transfer", _one_of(mutual.TRANSFERS), f"must be one of {mutual.TRANSFERS}"),
        ("mutual.warmup_steps", _non_negative_int, "must be an integer >= 0"),
        ("mutual.peer_execution", _one_of(mutual.PEER_EXECUTIONS),
         f"must be one of {mutual.PEER_EXECUTIONS}"),
        ("optimizer.learning_rate", _positive_number, "must be a finite number > 0"),
        ("optimizer.b1", lambda v: _is_number(v) and 0 <= v < 1, "must be in [0, 1)"),
        ("optimizer.b2", lambda v: _is_number(v) and 0 <= v < 1, "must be in [0, 1)"),
        ("optimizer.eps", _positive_number, "must be a finite number > 0"),
        ("optimizer.grad_clip_norm", _non_negative_number, "must be a number >= 0 (0: off)"),
        ("optimizer.lr_decay_factor", lambda v: _is_number(v) and 0 < v <= 1,
         "must be in (0, 1] (1: no decay)"),
        ("optimizer.min_learning_rate", _non_negative_number, "must be a number >= 0"),
        ("optimizer.embedding_optimizer", _one_of(sparse.EMBEDDING_OPTIMIZERS),
         f"must be one of {sparse.EMBEDDING_OPTIMIZERS}"),
        ("train.batch_size", _positive_int, "must be an integer > 0"),
        ("train.num_epochs", _positive_int, "must be an integer > 0"),
        ("train.max_steps", _non_negative_int, "must be an integer >= 0 (0: no limit)"),
        ("train.eval_steps", _non_negative_int, "must be an integer >= 0 (0: every epoch)"),
        ("train.eval_batch_size", _positive_int, "must be an integer > 0"),
        ("train.patience", _positive_int, "must be an integer >= 1"),
        ("train.monitor", _one_of(MONITORS), f"must be one of {MONITORS}"),
        ("train.log_steps", _positive_int, "must be an integer > 0"),
        ("train.precise_bn_batches", _non_negative_int, "must be an integer >= 0 (0: off)"),
        ("train.max_saturated", lambda v: _is_number(v) and 0 <= v <= 1,
         "must be a fraction in [0, 1] (0: no check)"),
        ("train.max_logloss_ratio", _non_negative_number, "must be a number >= 0 (0: no check)"),
        ("checkpoint.ckpt_steps", _non_negative_int,
         "must be an integer >= 0 (0: only at the end and on SIGTERM)"),
        ("checkpoint.keep", _positive_int, "must be an integer >= 1"),
        ("mesh.data", _devices, "must be -1 (all remaining devices) or an integer >= 1"),
        ("mesh.peer", _devices, "must be -1 (all remaining devices) or an integer >= 1"),
        ("mesh.table", _positive_int, "must be an integer >= 1"),
        ("finetune.learning_rate", _positive_number, "must be a finite number > 0"),
        ("finetune.num_epochs", _positive_int, "must be an integer > 0"),
        ("finetune.max_steps", _non_negative_int, "must be an integer >= 0 (0: no limit)"),
        ("finetune.eval_steps", _non_negative_int, "must be an integer >= 0 (0: every epoch)"),
        ("finetune.patience", _positive_int, "must be an integer >= 1"),
    ]


def _get(config, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _fail(key: str, what: str, value) -> None:
    raise ValueError(f"config.{key}: {what} (got {value!r})")


def _validate_peers(config) -> None:
    """The peer spec parses, names known model sets, and frozen_peers names its peers."""
    spec, models = _get(config, "peers"), _get(config, "models")
    if spec is _MISSING or models is _MISSING:
        return
    try:
        keys = peer_groups.parse_peer_spec(spec)
    except ValueError as e:
        _fail("peers", f"{e} (e.g. deepfm+dcn or deepfm*4)", spec)
    for key in dict.fromkeys(keys):
        if key not in models:
            _fail("peers", f"peer {key!r} has no hyperparameter set in config.models "
                  f"(known: {', '.join(sorted(models))})", spec)
        arch = models[key].get("model", key)
        try:  # a registry name, or a user's MODULE:CLASS (imported here)
            valid = model_zoo.model_hparam_names(str(arch))
        except ValueError as e:
            _fail(f"models.{key}.model", str(e), arch)
        unknown = sorted(set(models[key]) - set(valid) - {"model"})
        if unknown:
            _fail(f"models.{key}", f"unknown hyperparameter(s) for model {arch!r}; valid: "
                  f"{valid}", unknown)
    counts = {key: keys.count(key) for key in keys}
    names = [name for key, n in counts.items()
             for name in ([key] if n == 1 else [f"{key}_{k}" for k in range(n)])]
    frozen = _get(config, "mutual.frozen_peers")
    if isinstance(frozen, str):
        unknown = [n.strip() for n in frozen.split(",") if n.strip() and n.strip() not in names]
        if unknown:
            _fail("mutual.frozen_peers", f"names unknown peer(s) {unknown}; peers: {names}",
                  frozen)
        if set(n.strip() for n in frozen.split(",")) >= set(names) and not _get(
                config, "init_from"):
            _fail("mutual.frozen_peers", "freezes every peer of a fresh run, so nothing would "
                  "train", frozen)
    _validate_peer_schedules(config, names, [key for key, n in counts.items()
                                             for _ in range(n)])


def _validate_peer_schedules(config, names: list[str], group_keys: list[str]) -> None:
    """train.peer_schedule and finetune.peer_schedule parse and name known peers."""
    for section in ("train", "finetune"):
        spec = _get(config, f"{section}.peer_schedule")
        if spec is _MISSING:
            continue
        if not isinstance(spec, str):
            _fail(f"{section}.peer_schedule", "must be a string 'PEER:SETTING=VALUE;...'", spec)
        try:
            overrides = peer_schedule.parse_peer_schedule(spec)
        except ValueError as e:
            _fail(f"{section}.peer_schedule", str(e), spec)
        unknown = sorted(set(overrides) - set(names) - set(group_keys))
        if unknown:
            _fail(f"{section}.peer_schedule", f"names unknown peer(s) {unknown}; peers: {names}",
                  spec)
    if _get(config, "train.peer_schedule") is not _MISSING:
        peer_schedule.peer_settings(config, names, group_keys)  # each peer's min_lr <= its lr


def _validate_data(config) -> None:
    """The protocol fits the dataset kind; a feature spec is for dataset 'csv' only."""
    dataset, protocol = _get(config, "data.dataset"), _get(config, "data.protocol")
    if dataset is not _MISSING and protocol is not _MISSING:
        problem = protocol_problem(dataset, protocol)
        if problem:
            _fail("data.protocol", problem, protocol)
    spec = _get(config, "data.feature_spec")
    if spec not in (_MISSING, "") and dataset != "csv":
        _fail("data.feature_spec", "is for data.dataset='csv'", spec)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every setting's value; returns None when the config makes sense.

    Args:
        config: a run config (see mlctr/configs/default.py).

    Raises:
        ValueError: one line, `config.<key>: <what is wrong> (got <value>)`, for the
            first nonsense setting found.
    """
    for key, is_legal, what in _rules():
        value = _get(config, key)
        if value is not _MISSING and not is_legal(value):
            _fail(key, what, value)
    _validate_peers(config)
    if _get(config, "data.dataset") == "synthetic" and _get(config, "data.num_rows") == 0:
        _fail("data.num_rows", "must be > 0 for the synthetic dataset (rows generated)", 0)
    _validate_data(config)
    field_buckets = _get(config, "vocab.field_buckets")
    hashed = _get(config, "vocab.mode") == "hash"
    if isinstance(field_buckets, str) and field_buckets and not hashed:
        _fail("vocab.field_buckets", "is for vocab.mode='hash'", field_buckets)
    lr, min_lr = _get(config, "optimizer.learning_rate"), _get(config, "optimizer.min_learning_rate")
    if _is_number(lr) and _is_number(min_lr) and min_lr > lr:
        _fail("optimizer.min_learning_rate",
              f"must not exceed optimizer.learning_rate ({lr}): a decay would raise the rate",
              min_lr)
