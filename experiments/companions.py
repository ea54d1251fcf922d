"""Claim 3: stronger companions help more.

The target (first peer of config.peers) always starts from its fully
pretrained weights; its companions (the other peers) start from checkpoints
pretrained for a fraction of the full pretraining steps (`--fractions`), so
their strength varies while everything else is fixed. Gain = relative test-AUC
improvement of the target's mutual finetune over its independent finetune.

  python experiments/companions.py --workdir=runs/paper/companions --fractions=0.05,0.2,1.0

Writes table.md, results.json and gain_vs_companion_auc.png.
"""
import os

from absl import app
from absl import flags

import common
from mlctr import paper, report
from mlctr.data.reader import PreparedDataset

flags.DEFINE_string("fractions", "0.05,0.2,1.0",
                    "Companion pretraining length as fractions of the full pretraining.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root = common.setup()
    peers = [p.strip() for p in config.peers.replace("+", ",").split(",") if p.strip()]
    target, companions = peers[0], peers[1:]
    fractions = [float(f) for f in FLAGS.fractions.split(",")]
    records = []
    for seed in seeds:
        full_dir, full = paper.pretrain(config, pretrain_root, seed, ",".join(peers))
        steps_per_epoch = PreparedDataset(config.data.data_dir).num_train_batches(
            config.train.batch_size)
        full_steps = full["steps"]
        control = paper.finetune(config, os.path.join(workdir, f"seed{seed}", "control"), seed=seed,
                                 init_from=full_dir, peers=target, alpha=0.0)
        for fraction in fractions:
            steps = max(1, int(round(fraction * full_steps))) if fraction < 1 else 0
            weak_dir, weak = (full_dir, full) if steps == 0 else paper.pretrain(
                config, pretrain_root, seed, ",".join(companions), max_steps=steps)
            init_dir = paper.combine_weights(
                {target: full_dir, **{c: weak_dir for c in companions}},
                os.path.join(workdir, f"seed{seed}", f"init_f{fraction}"))
            mutual = paper.finetune(config, os.path.join(workdir, f"seed{seed}", f"mutual_f{fraction}"),
                                    seed=seed, init_from=init_dir, peers=",".join(peers),
                                    alpha=config.mutual.alpha)
            companion_auc = sum(weak["test"][c]["auc"] for c in companions) / len(companions)
            records.append({"seed": seed, "fraction": fraction, "companion_steps": steps or full_steps,
                            "steps_per_epoch": steps_per_epoch, "companion_auc": companion_auc,
                            "control_auc": control["test"][target]["auc"],
                            "mutual_auc": mutual["test"][target]["auc"]})
    rows, xs, gains = [], [], []
    for fraction in fractions:
        rs = [r for r in records if r["fraction"] == fraction]
        s = report.summarise_pairs("auc", [r["mutual_auc"] for r in rs], [r["control_auc"] for r in rs])
        xs.append(sum(r["companion_auc"] for r in rs) / len(rs))
        gains.append([report.relative_improvement("auc", r["control_auc"], r["mutual_auc"]) for r in rs])
        rows.append({"fraction": fraction, "companion_steps": rs[0]["companion_steps"],
                     "companion_auc": report.mean_std([r["companion_auc"] for r in rs]),
                     "control_auc": report.mean_std([r["control_auc"] for r in rs]),
                     "mutual_auc": report.mean_std([r["mutual_auc"] for r in rs]),
                     "gain_pct": f"{s['gain_pct']:+.3f}", "verdict": s["verdict"]})
    table = (f"{target} finetuned with companions {companions} of varied strength (test AUC, seeds "
             f"{seeds}, alpha {config.mutual.alpha}, {config.mutual.divergence})\n\n"
             + report.markdown_table(rows, [
                 ("fraction", "companion pretraining fraction"), ("companion_steps", "steps"),
                 ("companion_auc", "companion mean AUC"), ("control_auc", f"{target} control AUC"),
                 ("mutual_auc", f"{target} mutual AUC"), ("gain_pct", "gain %"),
                 ("verdict", "paired test")])
             + paper.bayes_note(full))
    report.plot_gain(xs, gains, os.path.join(workdir, "gain_vs_companion_auc.png"),
                     xlabel="companions' mean test AUC", title=f"{target}: gain vs companion strength",
                     labels=[f"f={f}" for f in fractions])
    paper.write_outputs(workdir, {"claim": "companions", "seeds": seeds, "records": records,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
