"""Per-peer early stopping and learning-rate decay (the BARS protocol, peer by peer).

After a non-improving evaluation a peer's learning rate is multiplied by
`optimizer.lr_decay_factor` (floor `optimizer.min_learning_rate`); after
`train.patience` non-improving evaluations in a row the peer stops. Each peer
keeps its own schedule, so a strong peer may train on while a weak one has stopped.
The schedule is plain Python state, saved as JSON in every checkpoint.

The settings may differ per peer (`train.peer_schedule`, read by
mlctr/configs/peer_schedule.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

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
