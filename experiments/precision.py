"""Compute dtype: the AUC effect of training the peers in bfloat16 instead of float32.

Per seed, the peers are trained independently from scratch twice with the same init keys,
data order and schedule: once with `compute_dtype=float32` (the pretraining the other
entries share, cached under --pretrain_root) and once with `compute_dtype=bfloat16`
(activations and matmuls in bfloat16; parameters, optimizer state, losses and metrics stay
float32). The table gives each peer's test AUC and logloss under both, the relative change
and a paired t-test across seeds. bfloat16 is what a GPU/TPU run would use for speed; on a
CPU without bfloat16 units it is slower (this measures accuracy, not speed).

  python experiments/precision.py --workdir=runs/paper/precision --pretrain_root=runs/paper/pretrain

Writes table.md, results.json and precision.png (test AUC per peer and dtype).
"""
import os

from absl import app

import common
from mlctr import paper, report


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root = common.setup()
    peers = config.peers
    bf16 = config.copy_and_resolve_references()
    with bf16.unlocked():
        bf16.compute_dtype = "bfloat16"
    per_seed = []
    for seed in seeds:
        _, f32_results = paper.pretrain(config, pretrain_root, seed, peers)
        _, bf16_results = paper.pretrain(bf16, pretrain_root, seed, peers)
        per_seed.append({"seed": seed, "float32": f32_results["test"],
                         "bfloat16": bf16_results["test"]})
    rows = []
    for name in per_seed[0]["float32"]:
        for metric in ("auc", "logloss"):
            f32 = [r["float32"][name][metric] for r in per_seed]
            b16 = [r["bfloat16"][name][metric] for r in per_seed]
            s = report.summarise_pairs(metric, b16, f32)
            rows.append({"peer": name, "metric": metric, "float32": report.mean_std(f32),
                         "bfloat16": report.mean_std(b16), "change_pct": f"{s['gain_pct']:+.3f}",
                         "verdict": s["verdict"]})
    table = (f"bfloat16 vs float32 compute, peers trained from scratch (test split, seeds {seeds}; "
             "change % > 0 means bfloat16 is better)\n\n"
             + report.markdown_table(rows, [("peer", "peer"), ("metric", "metric"),
                                            ("float32", "float32"), ("bfloat16", "bfloat16"),
                                            ("change_pct", "change %"), ("verdict", "paired test")])
             + paper.bayes_note(f32_results))
    report.plot_auc_bars(per_seed, list(per_seed[0]["float32"]), ("float32", "bfloat16"),
                         os.path.join(workdir, "precision.png"))
    paper.write_outputs(workdir, {"claim": "precision", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
