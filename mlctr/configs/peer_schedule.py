"""Per-peer schedule settings: `train.peer_schedule` / `finetune.peer_schedule` read into
each peer's learning rate, patience and decay (mlctr/run/schedule.py runs them).

BARS tunes them per model, e.g. patience 3 for IPNN on Frappe_x1 where the other models use
2; a global patience of 2 stopped IPNN at epoch 3-4, 2.7 AUC points below its companions,
which distorts every mutual comparison with it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

# The settings `train.peer_schedule` may set per peer, and the config key of each global.
PEER_SETTINGS = {"learning_rate": "optimizer.learning_rate", "patience": "train.patience",
                 "lr_decay_factor": "optimizer.lr_decay_factor",
                 "min_learning_rate": "optimizer.min_learning_rate"}


def parse_peer_schedule(spec: str) -> dict[str, dict[str, float]]:
    """'ipnn:patience=3;fibinet:patience=1,lr_decay_factor=0.5' -> {peer: {setting: value}}.

    Raises:
      ValueError: a malformed entry, an unknown setting or a value out of range, naming it.
    """
    out: dict[str, dict[str, float]] = {}
    for entry in (e.strip() for e in spec.split(";")):
        if not entry:
            continue
        name, sep, settings = entry.partition(":")
        name = name.strip()
        if not sep or not name or not settings.strip():
            raise ValueError(f"entry {entry!r} is not PEER:SETTING=VALUE[,SETTING=VALUE]")
        if name in out:
            raise ValueError(f"peer {name!r} appears twice")
        out[name] = {}
        for item in (i.strip() for i in settings.split(",")):
            key, eq, value = (part.strip() for part in item.partition("="))
            if key not in PEER_SETTINGS:
                raise ValueError(f"{name}: unknown setting {key!r}; known: "
                                 f"{', '.join(PEER_SETTINGS)}")
            try:
                number = float(value) if eq else math.nan
            except ValueError:
                number = math.nan
            legal = {"learning_rate": number > 0, "min_learning_rate": number >= 0,
                     "lr_decay_factor": 0 < number <= 1,
                     "patience": number >= 1 and number == int(number)}[key]
            if not (math.isfinite(number) and legal):
                raise ValueError(f"{name}: {key}={value!r} is not a legal value (learning_rate "
                                 "> 0, min_learning_rate >= 0, lr_decay_factor in (0, 1], "
                                 "patience an integer >= 1)")
            out[name][key] = int(number) if key == "patience" else number
    return out


@dataclasses.dataclass(frozen=True)
class PeerSettings:
    """The schedule's settings, one entry per peer (global order)."""

    learning_rate: tuple[float, ...]
    patience: tuple[int, ...]
    lr_decay_factor: tuple[float, ...]
    min_learning_rate: tuple[float, ...]


def peer_settings(config, names: Sequence[str], group_keys: Sequence[str]) -> PeerSettings:
    """Each peer's schedule settings: the globals, overridden by `train.peer_schedule`.

    An override names a peer (`deepfm_1`) or a hyperparameter set (`deepfm`: all of its
    peers; a set of `config.models` that trains no peer here is allowed, so one schedule,
    e.g. a BARS config's, serves the runs of a study that train subsets of its peers); a
    peer's own entry wins over its set's.

    Args:
      config: the run config (a config without `train.peer_schedule`, from before the
        key existed, has no overrides).
      names: the peer names, in the global peer order.
      group_keys: each peer's hyperparameter-set key, in the same order.

    Raises:
      ValueError: `config.train.peer_schedule: ...` for a bad entry or an unknown name.
    """
    spec = config.train.get("peer_schedule", "")
    try:
        overrides = parse_peer_schedule(spec)
    except ValueError as e:
        raise ValueError(f"config.train.peer_schedule: {e} (got {spec!r})") from None
    unknown = sorted(set(overrides) - set(names) - set(group_keys)
                     - set(config.get("models", {}).keys()))
    if unknown:
        raise ValueError(f"config.train.peer_schedule: names unknown peer(s) {unknown}; "
                         f"peers: {list(names)} (got {spec!r})")
    columns = {key: [] for key in PEER_SETTINGS}
    for name, group_key in zip(names, group_keys):
        own = {**overrides.get(group_key, {}), **overrides.get(name, {})}
        for key, path in PEER_SETTINGS.items():
            section, field = path.split(".")
            columns[key].append(own.get(key, config[section][field]))
        # (The globals' own order is config validation's: `optimizer.min_learning_rate`.)
        if own and columns["min_learning_rate"][-1] > columns["learning_rate"][-1]:
            raise ValueError(f"config.train.peer_schedule: {name}'s min_learning_rate "
                             f"{columns['min_learning_rate'][-1]} exceeds its learning_rate "
                             f"{columns['learning_rate'][-1]} (got {spec!r})")
    return PeerSettings(**{k: tuple(v) for k, v in columns.items()})
