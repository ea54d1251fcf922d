"""Claim 1: mutual learning from scratch does not improve CTR models.

Independent training vs mutual learning from scratch, the four paper peers,
same seeds, data order and schedule; per peer test AUC/logloss mean ± std over
seeds, relative improvement and a paired t-test.

  python experiments/scratch.py --workdir=runs/paper/scratch --pretrain_root=runs/paper/pretrain

Writes table.md, results.json and curves.png (valid AUC vs step, seed 0).
"""
import os

from absl import app

import common
from mlctr import paper, report


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root = common.setup()
    peers = config.peers
    per_seed = []
    for seed in seeds:
        independent_dir, independent = paper.pretrain(config, pretrain_root, seed, peers)
        mutual_dir = os.path.join(workdir, f"seed{seed}", "mutual_scratch")
        mutual = paper.from_scratch(config, mutual_dir, seed=seed, peers=peers,
                                    alpha=config.mutual.alpha)
        per_seed.append({"seed": seed, "independent": independent["test"], "mutual": mutual["test"],
                         "independent_dir": independent_dir, "mutual_dir": mutual_dir})
    rows = []
    for name in per_seed[0]["independent"]:
        for metric in ("auc", "logloss"):
            s = report.summarise_pairs(metric, [r["mutual"][name][metric] for r in per_seed],
                                       [r["independent"][name][metric] for r in per_seed])
            rows.append({"peer": name, "metric": metric,
                         "independent": report.mean_std([r["independent"][name][metric] for r in per_seed]),
                         "mutual": report.mean_std([r["mutual"][name][metric] for r in per_seed]),
                         "gain_pct": f"{s['gain_pct']:+.3f}", "p": s["test_p"], "verdict": s["verdict"]})
    table = (f"Mutual learning from scratch vs independent training (test split, seeds {seeds}, "
             f"alpha {config.mutual.alpha}, {config.mutual.divergence})\n\n"
             + report.markdown_table(rows, [("peer", "peer"), ("metric", "metric"),
                                            ("independent", "independent"), ("mutual", "mutual"),
                                            ("gain_pct", "gain %"), ("p", "paired p"),
                                            ("verdict", "verdict")])
             + paper.bayes_note(independent))
    names = [n for n in per_seed[0]["independent"] if n != "ensemble"]
    ind = paper.learning_curves(per_seed[0]["independent_dir"], names)
    mut = paper.learning_curves(per_seed[0]["mutual_dir"], names)
    report.plot_learning_curves({n: {"independent": ind[n], "mutual": mut[n]} for n in names},
                                os.path.join(workdir, "curves.png"),
                                f"from scratch, seed {seeds[0]}")
    paper.write_outputs(workdir, {"claim": "scratch", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
