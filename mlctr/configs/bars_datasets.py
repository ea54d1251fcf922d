"""Every dataset BARS publishes for mlctr's models: its protocol, each model's
hyperparameters with their source, and the published test AUC to compare with.

Sources (cited as "BARS": the reczoo/BARS benchmark, ``ranking/ctr/<Model>/<Model>_<dataset>``):

* hyperparameters of Criteo_x4_001 / Avazu_x4_001: mlctr/configs/bars_table.py, read from
  the BARS run logs (every model mlctr has but OPNN, which BARS lacks);
* published test AUCs: x4_001 of every model as quoted in README.md (BARS's logs);
  Criteo_x1 / Avazu_x1 of DeepFM, DCN, IPNN, FiBiNET from the project's BARS reference
  notes (../shared/BARS.md, "BARS test results"); Frappe_x1 / MovielensLatest_x1 of
  DeepFM as README.md quoted them before this table existed;
* the x4_002 protocol (min_count 2 Criteo / 1 Avazu, embedding 40) from those notes'
  "BARS x4 protocol"; the x1 monitor (AUC, where x4 monitors AUC - logloss) from their
  "BARS training protocol".

What these sources do not give is NOT filled in from memory: BARS's tuned
hyperparameters of the x1 datasets and of x4_002, the x1 batch size, and most x1 /
x4_002 test AUCs. For those datasets a config still runs, with a declared stand-in
(`STAND_INS`: the x4_001 set of the nearest dataset, with x4_002's embedding size 40),
and every table built from here says "stand-in" and "—" where the source is silent.
Add a value (and its source) to bars_table.BARS / `PUBLISHED_AUC` to replace one.
"""
from __future__ import annotations

from typing import Any

from mlctr.configs import bars_table

# BARS dataset -> (config.data.dataset, config.data.protocol, config.train.monitor).
DATASETS = {
    "criteo_x4_001": ("criteo", "x4_001", "auc-logloss"),
    "criteo_x4_002": ("criteo", "x4_002", "auc-logloss"),
    "avazu_x4_001": ("avazu", "x4_001", "auc-logloss"),
    "avazu_x4_002": ("avazu", "x4_002", "auc-logloss"),
    "criteo_x1": ("criteo_x1", "x1", "auc"),
    "avazu_x1": ("avazu_x1", "x1", "auc"),
    "frappe_x1": ("frappe_x1", "x1", "auc"),
    "movielens_x1": ("movielens_x1", "x1", "auc"),  # BARS's MovielensLatest_x1
}
BARS_NAMES = {"criteo_x4_001": "Criteo_x4_001", "criteo_x4_002": "Criteo_x4_002",
              "avazu_x4_001": "Avazu_x4_001", "avazu_x4_002": "Avazu_x4_002",
              "criteo_x1": "Criteo_x1", "avazu_x1": "Avazu_x1", "frappe_x1": "Frappe_x1",
              "movielens_x1": "MovielensLatest_x1"}
# Peer key -> registered model, in table order (opnn: BARS has no OPNN).
MODELS = {"lr": "lr", "fm": "fm", "deepfm": "deepfm", "dcn": "dcn", "ipnn": "pnn",
          "fibinet": "fibinet", "wide_deep": "wide_deep", "dcnv2": "dcnv2",
          "xdeepfm": "xdeepfm", "autoint": "autoint", "finalmlp": "finalmlp",
          "finalnet": "finalnet", "dcnv3": "dcnv3", "masknet": "masknet", "onn": "onn"}
# The datasets whose BARS-tuned sets are recorded (bars_table.BARS).
TUNED = tuple(bars_table.DATASETS)
# The rest: (the recorded dataset whose sets stand in, overrides from the protocol).
STAND_INS = {
    "criteo_x4_002": ("criteo_x4_001", {"embedding_dim": 40}),
    "avazu_x4_002": ("avazu_x4_001", {"embedding_dim": 40}),
    "criteo_x1": ("criteo_x4_001", {}),
    "avazu_x1": ("avazu_x4_001", {}),
    "frappe_x1": ("criteo_x4_001", {}),
    "movielens_x1": ("criteo_x4_001", {}),
}

PUBLISHED_AUC: dict[str, dict[str, float]] = {
    "criteo_x4_001": {"lr": 0.793359, "fm": 0.808607, "deepfm": 0.814332, "dcn": 0.814437,
                      "ipnn": 0.814212, "fibinet": 0.813097, "wide_deep": 0.814232,
                      "dcnv2": 0.814514, "xdeepfm": 0.814331, "autoint": 0.811918,
                      "finalmlp": 0.814584, "finalnet": 0.814966, "masknet": 0.813420,
                      "onn": 0.814772},
    "avazu_x4_001": {"lr": 0.777457, "fm": 0.788721, "deepfm": 0.792990, "dcn": 0.793061,
                     "ipnn": 0.794385, "fibinet": 0.795261, "wide_deep": 0.792869,
                     "dcnv2": 0.793146, "xdeepfm": 0.793283, "autoint": 0.789103,
                     "finalmlp": 0.793537, "finalnet": 0.794116, "masknet": 0.794382,
                     "onn": 0.799150},
    "criteo_x1": {"deepfm": 0.813812, "dcn": 0.813767, "ipnn": 0.813664, "fibinet": 0.813010,
                  "finalnet": 0.8154},
    "avazu_x1": {"deepfm": 0.764586, "dcn": 0.763808, "ipnn": 0.763014, "fibinet": 0.764531,
                 "finalnet": 0.7672},
    "frappe_x1": {"deepfm": 0.983947, "finalmlp": 0.9861},
    "movielens_x1": {"deepfm": 0.968223, "finalnet": 0.9725},
    "criteo_x4_002": {},
    "avazu_x4_002": {},
}


def resolve(name: str) -> str:
    """The BARS dataset a bars.py argument names ('criteo' / 'avazu': their x4_001)."""
    name = {"criteo": "criteo_x4_001", "avazu": "avazu_x4_001"}.get(name, name)
    if name not in DATASETS:
        raise ValueError(f"mlctr/configs/bars.py: dataset must be one of "
                         f"{', '.join(DATASETS)} (or criteo / avazu), got {name!r}")
    return name


def hparams(model: str, dataset: str) -> tuple[dict[str, Any], str]:
    """(hyperparameters, their source in words) of a peer key on a BARS dataset."""
    if dataset in TUNED:
        return (bars_table.bars_hparams(MODELS[model], dataset),
                f"BARS {BARS_NAMES[dataset]} run log")
    base, overrides = STAND_INS[dataset]
    values = bars_table.bars_hparams(MODELS[model], base)
    if "embedding_dim" in values:
        values.update(overrides)
    what = f"{BARS_NAMES[base]}'s set" + (" with embedding 40 (x4_002)" if overrides else "")
    return values, f"stand-in: {what}; BARS's tuned {BARS_NAMES[dataset]} values not recorded"


def markdown_table() -> str:
    """Per BARS dataset: where the hyperparameters come from and the published test AUCs."""
    header = ["BARS dataset", "`bars.py:` argument", "hyperparameters"] + list(MODELS)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in DATASETS:
        source = ("BARS run logs" if name in TUNED else
                  f"stand-in ({BARS_NAMES[STAND_INS[name][0]]}'s sets"
                  + (", embedding 40" if STAND_INS[name][1] else "") + ")")
        aucs = [f"{PUBLISHED_AUC[name][m]:.6f}" if m in PUBLISHED_AUC[name] else "—"
                for m in MODELS]
        lines.append("| " + " | ".join([BARS_NAMES[name], f"`{name}`", source] + aucs) + " |")
    return "\n".join(lines)
