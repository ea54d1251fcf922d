"""Per-peer early stopping and learning-rate decay (the BARS protocol, peer by peer).

After a non-improving evaluation a peer's learning rate is multiplied by
`optimizer.lr_decay_factor` (floor `optimizer.min_learning_rate`); after
`train.patience` non-improving evaluations in a row the peer stops. Each peer
keeps its own schedule, so a strong peer may train on while a weak one has stopped.
The schedule is plain Python state, saved as JSON in every checkpoint.

The settings may differ per peer (`train.peer_schedule`, `peer_settings`): BARS tunes
them per model, e.g. patience 3 for IPNN on Frappe_x1 where the other models use 2; a
global patience of 2 stopped IPNN at epoch 3-4, 2.7 AUC points below its companions,
which distorts every mutual comparison with it (issue 25).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

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
    peers); a peer's own entry wins over its set's.

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
    unknown = sorted(set(overrides) - set(names) - set(group_keys))
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


def _per_peer(value, num_peers: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * num_peers


@dataclasses.dataclass
class PeerSchedule:
    """BARS schedule, tracked separately for each peer.

    Attributes:
      learning_rate: current learning rate per peer.
      best_value: best monitored value per peer (-inf before the first eval).
      best_step: step of that best value.
      bad_evals: consecutive non-improving evaluations.
      stopped: whether the peer has early-stopped.
      flagged_steps: the steps at which the peer's valid predictions were broken
        (saturated, or a logloss far above a constant's: `evaluation.unhealthy`); such an
        evaluation never makes a best. Absent from checkpoints written before it existed.
    """

    learning_rate: list[float]
    best_value: list[float]
    best_step: list[int]
    bad_evals: list[int]
    stopped: list[bool]
    flagged_steps: list[list[int]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.flagged_steps:
            self.flagged_steps = [[] for _ in self.learning_rate]

    @classmethod
    def start(cls, num_peers: int, learning_rate: float | Sequence[float]) -> "PeerSchedule":
        """Before the first evaluation; `learning_rate` one for all or one per peer."""
        return cls(_per_peer(learning_rate, num_peers), [-math.inf] * num_peers,
                   [0] * num_peers, [0] * num_peers, [False] * num_peers)

    def update(self, values: list[float], step: int, *, patience: int | Sequence[int],
               decay: float | Sequence[float], min_lr: float | Sequence[float],
               min_delta: float = 1e-6) -> tuple[list[bool], list[bool]]:
        """Records one evaluation; returns (improved, newly_stopped) per peer.

        `patience`, `decay` and `min_lr` are one for all peers or one per peer.
        """
        n = len(values)
        patience, decay, min_lr = (_per_peer(patience, n), _per_peer(decay, n),
                                   _per_peer(min_lr, n))
        improved, newly_stopped = [], []
        for k, value in enumerate(values):
            if self.stopped[k]:
                improved.append(False)
                newly_stopped.append(False)
                continue
            better = value > self.best_value[k] + min_delta
            improved.append(better)
            if better:
                self.best_value[k], self.best_step[k], self.bad_evals[k] = value, step, 0
            else:
                self.bad_evals[k] += 1
                self.learning_rate[k] = max(self.learning_rate[k] * decay[k], min_lr[k])
            stop = self.bad_evals[k] >= patience[k]
            newly_stopped.append(stop)
            if stop:
                self.stopped[k] = True
        return improved, newly_stopped

    @property
    def all_stopped(self) -> bool:
        return all(self.stopped)

    def live_learning_rates(self) -> np.ndarray:
        """The learning rate each peer trains with now: 0 once it has stopped."""
        return np.asarray([0.0 if s else lr for s, lr in zip(self.stopped, self.learning_rate)],
                          np.float32)

    def to_json(self) -> dict:
        return {k: [None if isinstance(v, float) and math.isinf(v) else v for v in vals]
                for k, vals in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "PeerSchedule":
        d = dict(d)
        d["best_value"] = [-math.inf if v is None else v for v in d["best_value"]]
        return cls(**d)
