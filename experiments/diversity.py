"""How the mutual-finetune gain grows with the diversity of the peers.

Per `diversity` setting of the synthetic generator (mlctr/data/synthetic/hidden.py:
the share of the click function in parts that favour DCN, IPNN, FiBiNET or a deep
MLP) and seed: the four peers pretrained independently, then finetuned from the same
weights independently (control) and mutually. Per setting, over seeds: each peer's
test AUC, the 4-peer ensemble's relative AUC gain over the best peer, the mean pairwise
disagreement of the pretrained peers on the test rows (mean |p_i - p_j| and the
correlation of their logits), and the mutual-finetune gain over the control (the mean
of the peers' relative AUC gains) with its paired tests and power line.

  python -m experiments.diversity --config=experiments/configs/diversity.py \
      --workdir=runs/diversity --seeds=0,1,2,3,4 --diversities=0,1,4 \
      --results_dir=experiments/results

Seeds run in the outer loop and every run is cached, so an interrupted study resumes
where it stopped and a partial one already covers every setting. Writes table.md,
results.json and diversity_gain.png (mutual gain vs disagreement) to the workdir, and
with --results_dir the same as diversity_table.md / diversity_results.json /
diversity_gain.png there.
"""
from __future__ import annotations

import datetime
import itertools
import json
import os
import shutil

from absl import app
from absl import flags
import numpy as np

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import peer_groups
from mlctr import report
from mlctr import study
from mlctr.data import prepare as prepare_lib
from mlctr.data import synthetic

flags.DEFINE_string("diversities", "0,1,4", "Comma-separated synthetic diversity settings.")
flags.DEFINE_string("results_dir", "", "Also write diversity_* files here (e.g. "
                    "experiments/results).")
FLAGS = flags.FLAGS


def setting_config(config, root: str, diversity: float):
    """A copy of `config` on the synthetic dataset of one diversity (generated, prepared)."""
    raw = os.path.join(root, "data", "raw", f"synthetic_d{diversity:g}.txt")
    data_dir = os.path.join(root, "data", f"synthetic_d{diversity:g}")
    # Prepared here, so the trainer finds the dataset and never regenerates it without
    # the knob (config.data has no diversity field).
    if not os.path.exists(os.path.join(data_dir, "feature_map.json")):
        synthetic.generate(raw, num_rows=config.data.num_rows, seed=config.data.split_seed,
                           diversity=diversity)
        prepare_lib.prepare("synthetic", raw, data_dir, protocol=config.data.protocol,
                            seed=config.data.split_seed)
    setting = config.copy_and_resolve_references()
    with setting.unlocked():
        setting.data.dataset, setting.data.raw, setting.data.data_dir = "synthetic", raw, data_dir
    return setting


def disagreement(probs: dict[str, np.ndarray], names: list[str]) -> dict[str, float]:
    """Mean over peer pairs of mean |p_i - p_j| and of the correlation of their logits."""
    def logit(p):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    pairs = list(itertools.combinations(names, 2))
    return {"mean_abs_diff": float(np.mean([np.abs(probs[a] - probs[b]).mean()
                                            for a, b in pairs])),
            "logit_corr": float(np.mean([np.corrcoef(logit(probs[a]), logit(probs[b]))[0, 1]
                                         for a, b in pairs]))}


def run_cell(config, workdir: str, pretrain_root: str, diversity: float, seed: int) -> dict:
    """One setting and seed: pretrain, disagreement, control and mutual finetunes.

    Cached in <workdir>/cells/, so that several processes can share a study (disjoint
    --seeds, one --workdir) and a last one with all seeds only assembles it.
    """
    path = os.path.join(workdir, "cells", f"d{diversity:g}_seed{seed}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    setting = setting_config(config, os.path.dirname(pretrain_root), diversity)
    names = peer_groups.parse_peer_spec(config.peers)
    pretrain_dir, pretrained = paper.pretrain(setting, pretrain_root, seed, config.peers)
    probs, _ = study.split_probabilities(pretrain_dir, "test")
    arms = {}
    for arm, alpha in (("control", 0.0), ("mutual", config.mutual.alpha)):
        run_dir = os.path.join(workdir, f"d{diversity:g}", f"seed{seed}", arm)
        arms[arm] = paper.run(setting, run_dir, seed=seed, peers=config.peers, alpha=alpha,
                              init_from=pretrain_dir)["test"]
    best = max(pretrained["test"][n]["auc"] for n in names)
    cell = {"diversity": diversity, "seed": seed, "pretrain": pretrained["test"],
            "pretrain_steps": pretrained["steps"], "bayes": pretrained.get("bayes", {}),
            "ensemble_gain_pct": report.relative_improvement(
                "auc", best, pretrained["test"]["ensemble"]["auc"]),
            "disagreement": disagreement(probs, names), **arms}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(cell, f, indent=1)
    os.replace(path + ".tmp", path)
    return cell


def summarise(cells: list[dict], names: list[str], effect_pct: float) -> tuple[list, list]:
    """Per setting: the table row and the statistics line (mutual vs control over seeds)."""
    rows, lines = [], []
    for diversity in sorted({c["diversity"] for c in cells}):
        group = [c for c in cells if c["diversity"] == diversity]
        mutual = [np.mean([c["mutual"][n]["auc"] for n in names]) for c in group]
        control = [np.mean([c["control"][n]["auc"] for n in names]) for c in group]
        s = analysis.compare("auc", mutual, control, effect_pct)
        bayes = group[0]["bayes"].get("test", {}).get("auc")
        row = {"diversity": f"{diversity:g}", "seeds": len(group), "bayes": bayes,
               **{n: report.mean_std([c["pretrain"][n]["auc"] for c in group]) for n in names},
               "ensemble_gain": report.mean_std([c["ensemble_gain_pct"] for c in group], 3),
               "abs_diff": report.mean_std(
                   [c["disagreement"]["mean_abs_diff"] for c in group], 4),
               "logit_corr": report.mean_std([c["disagreement"]["logit_corr"] for c in group], 3),
               "mutual_gain": f"{s['gain_pct']:+.3f}", "p_t": s["p_t"],
               "seeds_needed": s["seeds_needed"], "stats": s}
        rows.append(row)
        lines.append(analysis.tests_line(f"diversity {diversity:g}, mean of the peers", s))
    return rows, lines


def table_text(rows, lines, names, seeds, config) -> str:
    columns = ([("diversity", "diversity"), ("seeds", "seeds"), ("bayes", "Bayes AUC")]
               + [(n, f"{n} AUC") for n in names]
               + [("ensemble_gain", "ensemble vs best peer %"),
                  ("abs_diff", "mean abs(p_i - p_j)"), ("logit_corr", "logit corr."),
                  ("mutual_gain", "mutual vs control %"), ("p_t", "paired t p"),
                  ("seeds_needed", "seeds needed")])
    return (f"Peer diversity vs mutual-finetune gain (synthetic Criteo-format, "
            f"{config.data.num_rows:,} rows, split 8:1:1 seed {config.data.split_seed}; seeds "
            f"{seeds}; test split; peer AUCs and disagreement of the pretrained peers; mutual "
            f"alpha {config.mutual.alpha} {config.mutual.divergence}, finetune lr "
            f"{config.finetune.learning_rate}, {config.finetune.num_epochs} epoch(s))\n\n"
            + report.markdown_table(rows, columns) + analysis.statistics_block(lines))


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    config.peers = ",".join(paper.name_peers(config, config.peers))
    diversities = [float(d) for d in FLAGS.diversities.split(",") if d.strip()]
    names = peer_groups.parse_peer_spec(config.peers)
    cells = []
    for seed, diversity in itertools.product(seeds, diversities):
        cells.append(run_cell(config, workdir, pretrain_root, diversity, seed))
        rows, lines = summarise(cells, names, effect_pct)
        table = table_text(rows, lines, names, sorted({c["seed"] for c in cells}), config)
        results = {"claim": "diversity", "date": datetime.date.today().isoformat(),
                   "command": "python -m experiments.diversity " + " ".join(
                       f"--{k}={FLAGS[k].value}" for k in ("seeds", "diversities")),
                   "config": config.to_dict(), "seeds": seeds, "cells": cells, "rows": rows}
        paper.write_outputs(workdir, results, table)
    xs = [np.mean([c["disagreement"]["mean_abs_diff"] for c in cells if c["diversity"] == d])
          for d in diversities]
    gains = [row["stats"]["gains_pct"] for row in rows]
    figure = os.path.join(workdir, "diversity_gain.png")
    analysis.plot_gain(xs, gains, figure, xlabel="mean abs(p_i - p_j) of the pretrained peers",
                       title="mutual-finetune gain vs peer disagreement",
                       labels=[f"d={d:g}" for d in diversities])
    if FLAGS.results_dir:
        os.makedirs(FLAGS.results_dir, exist_ok=True)
        for name, target in (("table.md", "diversity_table.md"),
                             ("results.json", "diversity_results.json"),
                             ("diversity_gain.png", "diversity_gain.png")):
            shutil.copyfile(os.path.join(workdir, name), os.path.join(FLAGS.results_dir, target))


if __name__ == "__main__":
    app.run(main)
