"""Compute dtype: the AUC effect of training the peers in bfloat16 instead of float32.

Per seed, the peers are trained independently from scratch twice with the same init keys,
data order and schedule: once with `compute_dtype=float32` (the pretraining the other
runners share, cached under --pretrain_root) and once with `compute_dtype=bfloat16`
(activations and matmuls in bfloat16; parameters, optimizer state, losses and metrics stay
float32). The table gives each peer's test AUC and logloss under both, the relative change,
the paired tests and the power line. bfloat16 is what a GPU/TPU run would use for speed; on
a CPU without bfloat16 units it is slower (this measures accuracy, not speed).

  python -m experiments.precision --workdir=runs/paper/precision --pretrain_root=runs/paper/pretrain

Writes table.md, results.json and precision.png (test AUC per peer and dtype).
"""
import os

from absl import app

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import report

COLUMNS = [("peer", "peer"), ("metric", "metric"), ("float32", "float32"),
           ("bfloat16", "bfloat16"), ("change_pct", "change %"), ("verdict", "paired t")]


# Config keys this runner sets itself (an override of one is refused, naming it).
OWNED = {"compute_dtype": "float32 and bfloat16, one arm each"}


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup(owned=OWNED)
    bf16 = config.copy_and_resolve_references()
    with bf16.unlocked():
        bf16.compute_dtype = "bfloat16"
    per_seed = []
    for seed in seeds:
        _, f32_results = paper.pretrain(config, pretrain_root, seed, config.peers)
        _, bf16_results = paper.pretrain(bf16, pretrain_root, seed, config.peers)
        per_seed.append({"seed": seed, "float32": f32_results["test"],
                         "bfloat16": bf16_results["test"], "bayes": f32_results.get("bayes")})
    rows, lines = [], []
    for name in per_seed[0]["float32"]:
        for metric in ("auc", "logloss"):
            s = analysis.compare(metric, [r["bfloat16"][name][metric] for r in per_seed],
                                 [r["float32"][name][metric] for r in per_seed], effect_pct)
            rows.append({"peer": name, "metric": metric, "float32": s["control"],
                         "bfloat16": s["treated"], "change_pct": f"{s['gain_pct']:+.3f}",
                         "verdict": s["verdict"], "stats": s})
            if metric == "auc":
                lines.append(analysis.tests_line(f"{name}, bfloat16 vs float32", s))
    table = (f"bfloat16 vs float32 compute, peers trained from scratch (test split, seeds {seeds}; "
             "change % > 0 means bfloat16 is better)\n\n" + report.markdown_table(rows, COLUMNS)
             + report.bayes_note(per_seed[0]) + analysis.statistics_block(lines))
    analysis.plot_auc_bars(per_seed, list(per_seed[0]["float32"]), ("float32", "bfloat16"),
                           os.path.join(workdir, "precision.png"))
    paper.write_outputs(workdir, {"claim": "precision", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
