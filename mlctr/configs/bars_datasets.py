"""Every dataset BARS publishes for mlctr's models: its protocol, each model's
hyperparameters with their source, and the published test AUC to compare with.

Sources (cited as "BARS": the reczoo/BARS benchmark, ``ranking/ctr/<Model>/<Model>_<dataset>``):

* hyperparameters: Criteo_x4_001 / Avazu_x4_001 in mlctr/configs/bars_table.py, the x1 and
  x4_002 splits in mlctr/configs/bars_other_splits.py, each read from the BARS run's README
  (`bars_table.source`);
* published test AUCs: the same READMEs (the "Avg" row where a README reports several runs);
  DCNv3's x4 values are its authors' logs, not BARS (README.md says so);
* the x4_002 protocol (min_count 2 Criteo / 1 Avazu, embedding 40) and the x1 monitor (AUC,
  where x4 monitors AUC - logloss) from ../shared/BARS.md.

Where BARS has no run of a model on a dataset (DCNv2, FinalMLP, FinalNet, MaskNet on x4_002;
ONN on x1; GDCN, EulerNet, OPNN anywhere) nothing is filled in from memory: a config still
runs, with a declared stand-in (`STAND_INS`: the x4_001 set of the nearest dataset, with
x4_002's embedding size 40), and every table built from here says "stand-in" and "—".
"""
from __future__ import annotations

import re
from typing import Any

from mlctr.configs import bars_other_splits
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
# A model BARS never ran on a dataset: (the recorded dataset whose set stands in, overrides).
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
                      "finalmlp": 0.814584, "finalnet": 0.814966, "masknet": 0.81342,
                      "onn": 0.814772},
    "avazu_x4_001": {"lr": 0.777457, "fm": 0.788721, "deepfm": 0.79299, "dcn": 0.793061,
                     "ipnn": 0.794385, "fibinet": 0.795261, "wide_deep": 0.792869,
                     "dcnv2": 0.793146, "xdeepfm": 0.793283, "autoint": 0.789103,
                     "finalmlp": 0.793537, "finalnet": 0.794116, "masknet": 0.794382,
                     "onn": 0.79915},
    "criteo_x1": {"lr": 0.788625, "fm": 0.802157, "deepfm": 0.813812, "dcn": 0.813767,
                  "ipnn": 0.813664, "fibinet": 0.81301, "wide_deep": 0.813822,
                  "dcnv2": 0.813939, "xdeepfm": 0.813788, "autoint": 0.812593,
                  "finalmlp": 0.814902, "finalnet": 0.815438, "masknet": 0.813909},
    "avazu_x1": {"lr": 0.751625, "fm": 0.761253, "deepfm": 0.764586, "dcn": 0.763808,
                 "ipnn": 0.763014, "fibinet": 0.764531, "wide_deep": 0.764638,
                 "dcnv2": 0.763639, "xdeepfm": 0.764205, "autoint": 0.762373,
                 "finalmlp": 0.766566, "finalnet": 0.767159, "masknet": 0.764289},
    "frappe_x1": {"lr": 0.935584, "fm": 0.967108, "deepfm": 0.983947, "dcn": 0.983418,
                  "ipnn": 0.984122, "fibinet": 0.983182, "wide_deep": 0.983073,
                  "dcnv2": 0.983824, "xdeepfm": 0.984138, "autoint": 0.983085,
                  "finalmlp": 0.986072, "finalnet": 0.985744, "masknet": 0.983683},
    "movielens_x1": {"lr": 0.934189, "fm": 0.943435, "deepfm": 0.968223, "dcn": 0.968356,
                     "ipnn": 0.969885, "fibinet": 0.957579, "wide_deep": 0.968393,
                     "dcnv2": 0.968657, "xdeepfm": 0.968098, "autoint": 0.966292,
                     "finalmlp": 0.971968, "finalnet": 0.971521, "masknet": 0.967201},
    "criteo_x4_002": {"lr": 0.793551, "fm": 0.807768, "deepfm": 0.814069, "dcn": 0.814073,
                      "ipnn": 0.813244, "fibinet": 0.81335, "wide_deep": 0.812913,
                      "xdeepfm": 0.814415, "autoint": 0.812877, "onn": 0.814149},
    "avazu_x4_002": {"lr": 0.780441, "fm": 0.790887, "deepfm": 0.796177, "dcn": 0.796517,
                     "ipnn": 0.798799, "fibinet": 0.800275, "wide_deep": 0.79575,
                     "xdeepfm": 0.796744, "autoint": 0.792228, "onn": 0.800119},
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
    if bars_table.has_run(MODELS[model], dataset):
        return (bars_table.bars_hparams(MODELS[model], dataset),
                f"BARS {BARS_NAMES[dataset]} run ({bars_table.source(MODELS[model], dataset)})")
    base, overrides = STAND_INS[dataset]
    values = bars_table.bars_hparams(MODELS[model], base)
    if "embedding_dim" in values:
        values.update(overrides)
    what = f"{BARS_NAMES[base]}'s set" + (" with embedding 40 (x4_002)" if overrides else "")
    return values, f"stand-in: {what}; BARS has no {BARS_NAMES[dataset]} run of it"


def peer_schedule(dataset: str, peers: str) -> str:
    """`train.peer_schedule` of the BARS runs whose patience differs from the protocol's 2
    (e.g. IPNN's 3 on Frappe_x1), for the peer keys that `peers` names."""
    keys = set(re.findall(r"[A-Za-z_]\w*", peers))
    return ";".join(f"{key}:patience={bars_other_splits.PATIENCE[(model, dataset)]}"
                    for key, model in MODELS.items()
                    if key in keys and (model, dataset) in bars_other_splits.PATIENCE)


def batch_size(dataset: str) -> int:
    """The batch size of a BARS config: the one most of the dataset's runs used (a mutual
    run has one batch size for all its peers)."""
    sizes = [bars_table.batch_size(MODELS[m], dataset) for m in MODELS
             if bars_table.has_run(MODELS[m], dataset)]
    return max(set(sizes), key=sizes.count)


def markdown_table() -> str:
    """Per BARS dataset: where the hyperparameters come from and the published test AUCs."""
    header = ["BARS dataset", "`bars.py:` argument", "hyperparameters"] + list(MODELS)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in DATASETS:
        missing = [m for m in MODELS if not bars_table.has_run(MODELS[m], name)]
        source = "BARS runs" + (f"; stand-in for {', '.join(missing)}" if missing else "")
        aucs = [f"{PUBLISHED_AUC[name][m]:.6f}" if m in PUBLISHED_AUC[name] else "—"
                for m in MODELS]
        lines.append("| " + " | ".join([BARS_NAMES[name], f"`{name}`", source] + aucs) + " |")
    return "\n".join(lines)
