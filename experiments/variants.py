"""Design choices of the mutual term: mse vs kl, stop-gradient vs two-way, alpha.

From the same pretrained peers (per seed), each variant's mutual finetune is
compared with the independent finetune control. The score of a variant in one
seed is the peers' mean test AUC; the table gives its mean ± std over seeds,
the relative gain over the control and a paired t-test.

  python experiments/variants.py --workdir=runs/paper/variants --alphas=0.25,0.5,1,2,4

Writes table.md, results.json and gain_vs_alpha.png.
"""
import os

from absl import app
from absl import flags

import common
from mlctr import paper, report

flags.DEFINE_string("alphas", "0.25,0.5,1,2,4", "Alpha sweep (mse, stop-gradient).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root = common.setup()
    peers = config.peers
    alphas = [float(a) for a in FLAGS.alphas.split(",")]
    variants = [(f"{d}, {'stop-gradient' if sg else 'two-way'}, alpha {config.mutual.alpha:g}",
                 dict(alpha=config.mutual.alpha, divergence=d, stop_gradient=sg))
                for d in ("mse", "kl") for sg in (True, False)]
    variants += [(f"mse, stop-gradient, alpha {a:g}", dict(alpha=a, divergence="mse", stop_gradient=True))
                 for a in alphas if a != config.mutual.alpha]
    scores = {"control": []}
    for seed in seeds:
        pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, peers)
        runs = [("control", dict(alpha=0.0))] + variants
        for label, options in runs:
            tag = label.replace(", ", "_").replace(" ", "")
            results = paper.finetune(config, os.path.join(workdir, f"seed{seed}", tag), seed=seed,
                                     init_from=pretrain_dir, peers=peers, **options)
            aucs = [m["auc"] for n, m in results["test"].items() if n != "ensemble"]
            scores.setdefault(label, []).append(sum(aucs) / len(aucs))
    rows = [{"variant": "control (independent finetune)", "mean_auc": report.mean_std(scores["control"]),
             "gain_pct": "", "verdict": ""}]
    for label, _ in variants:
        s = report.summarise_pairs("auc", scores[label], scores["control"])
        rows.append({"variant": label, "mean_auc": report.mean_std(scores[label]),
                     "gain_pct": f"{s['gain_pct']:+.3f}", "verdict": s["verdict"]})
    table = (f"Mutual-term variants vs the independent finetune (peers' mean test AUC, seeds {seeds})\n\n"
             + report.markdown_table(rows, [("variant", "variant"), ("mean_auc", "mean AUC"),
                                            ("gain_pct", "gain %"), ("verdict", "paired test")])
             + paper.bayes_note(pretrained))
    sweep = sorted(set(alphas) | {config.mutual.alpha})
    label_of = {a: (f"mse, stop-gradient, alpha {a:g}" if a != config.mutual.alpha else
                    f"mse, stop-gradient, alpha {config.mutual.alpha:g}") for a in sweep}
    report.plot_gain(sweep, [[report.relative_improvement("auc", c, t) for c, t in
                              zip(scores["control"], scores[label_of[a]])] for a in sweep],
                     os.path.join(workdir, "gain_vs_alpha.png"), xlabel="alpha",
                     title="mse, stop-gradient: gain vs alpha")
    paper.write_outputs(workdir, {"claim": "variants", "seeds": seeds, "scores": scores,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
