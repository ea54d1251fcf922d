"""Claim 4: about 4 peers is best — gain of a fixed target peer vs group size N.

All peers of `--order` are pretrained independently once per seed; then the
first N of them (N = 1 .. len(order)) are finetuned mutually from those
weights. The target is the first peer; N = 1 is its independent finetune (the
control). Gain = relative test-AUC improvement of the target over N = 1.

  python experiments/cotrain_size.py --workdir=runs/paper/cotrain_size \
      --order=deepfm,dcn,ipnn,fibinet,wide_deep

Writes table.md, results.json and gain_vs_n.png.
"""
import os

from absl import app
from absl import flags

import common
from mlctr import paper, report

flags.DEFINE_string("order", "deepfm,dcn,ipnn,fibinet,wide_deep",
                    "Peers in the order they join; the first is the target.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root = common.setup()
    order = [p.strip() for p in FLAGS.order.split(",") if p.strip()]
    target = order[0]
    target_auc = {n: [] for n in range(1, len(order) + 1)}
    for seed in seeds:
        pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, ",".join(order))
        for n in range(1, len(order) + 1):
            run_dir = os.path.join(workdir, f"seed{seed}", f"n{n}")
            results = paper.finetune(config, run_dir, seed=seed, init_from=pretrain_dir,
                                     peers=",".join(order[:n]), alpha=config.mutual.alpha)
            target_auc[n].append(results["test"][target]["auc"])
    rows, gains = [], []
    for n in range(1, len(order) + 1):
        s = report.summarise_pairs("auc", target_auc[n], target_auc[1])
        per_seed_gain = [report.relative_improvement("auc", c, t)
                         for c, t in zip(target_auc[1], target_auc[n])]
        gains.append(per_seed_gain)
        rows.append({"N": n, "peers": "+".join(order[:n]),
                     "target_auc": report.mean_std(target_auc[n]),
                     "gain_pct": f"{s['gain_pct']:+.3f}",
                     "verdict": s["verdict"] if n > 1 else "control"})
    table = (f"Gain of {target} vs number of peers (test AUC, seeds {seeds}, alpha "
             f"{config.mutual.alpha}, {config.mutual.divergence})\n\n"
             + report.markdown_table(rows, [("N", "N"), ("peers", "peers"),
                                            ("target_auc", f"{target} AUC"),
                                            ("gain_pct", "gain % vs N=1"),
                                            ("verdict", "paired test")])
             + paper.bayes_note(pretrained))
    report.plot_gain(list(target_auc), gains, os.path.join(workdir, "gain_vs_n.png"),
                     xlabel="number of peers N", title=f"{target}: gain vs N")
    paper.write_outputs(workdir, {"claim": "cotrain_size", "seeds": seeds, "order": order,
                                  "target_auc": target_auc, "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
