"""Claim 2: mutual finetuning of pretrained peers improves them.

From the same pretrained checkpoints (per seed): the independent finetune
control (alpha = 0) vs the mutual finetune — same steps, schedule, data order
and dropout rngs. Per peer (and the peers' averaged-prediction ensemble):
test AUC / logloss mean ± std, relative improvement, paired t-test.

  python experiments/finetune.py --workdir=runs/paper/finetune --pretrain_root=runs/paper/pretrain

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
        pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, peers)
        arms = {}
        for arm, alpha in (("control", 0.0), ("mutual", config.mutual.alpha)):
            run_dir = os.path.join(workdir, f"seed{seed}", arm)
            arms[arm] = paper.finetune(config, run_dir, seed=seed, init_from=pretrain_dir,
                                       peers=peers, alpha=alpha)["test"]
            arms[arm + "_dir"] = run_dir
        per_seed.append({"seed": seed, "pretrain": pretrained["test"], **arms})
    rows = []
    for name in per_seed[0]["control"]:
        row = {"peer": name}
        for phase in ("pretrain", "control", "mutual"):
            row[f"{phase}_auc"] = report.mean_std([r[phase][name]["auc"] for r in per_seed])
        for metric in ("auc", "logloss"):
            s = report.summarise_pairs(metric, [r["mutual"][name][metric] for r in per_seed],
                                       [r["control"][name][metric] for r in per_seed])
            row[f"{metric}_gain"] = f"{s['gain_pct']:+.3f}"
            row[f"{metric}_verdict"] = s["verdict"]
        rows.append(row)
    table = (f"Mutual vs independent finetune from the same pretrained peers (test split, seeds "
             f"{seeds}, alpha {config.mutual.alpha}, {config.mutual.divergence}, finetune lr "
             f"{config.finetune.learning_rate}, {config.finetune.num_epochs} epoch(s))\n\n"
             + report.markdown_table(rows, [
                 ("peer", "peer"), ("pretrain_auc", "pretrain AUC"), ("control_auc", "control AUC"),
                 ("mutual_auc", "mutual AUC"), ("auc_gain", "AUC gain %"),
                 ("auc_verdict", "AUC paired test"), ("logloss_gain", "logloss gain %"),
                 ("logloss_verdict", "logloss paired test")])
             + paper.bayes_note(pretrained))
    names = [n for n in per_seed[0]["control"] if n != "ensemble"]
    control = paper.learning_curves(per_seed[0]["control_dir"], names)
    mutual = paper.learning_curves(per_seed[0]["mutual_dir"], names)
    report.plot_learning_curves({n: {"control": control[n], "mutual": mutual[n]} for n in names},
                                os.path.join(workdir, "curves.png"), f"finetune, seed {seeds[0]}")
    paper.write_outputs(workdir, {"claim": "finetune", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
