"""Design choices of the mutual term: mse vs kl, stop-gradient vs two-way, alpha.

From the same pretrained peers (per seed), each variant's mutual finetune is
compared with the independent finetune control. The score of a variant in one
seed is the peers' mean test AUC; the table gives its mean ± std over seeds,
the relative gain over the control, the paired tests and the power line.

  python -m experiments.variants --workdir=runs/paper/variants --alphas=0.25,0.5,1,2,4

Writes table.md, results.json and gain_vs_alpha.png.
"""
import os

from absl import app
from absl import flags

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import report

flags.DEFINE_string("alphas", "0.25,0.5,1,2,4", "Alpha sweep (mse, stop-gradient).")
FLAGS = flags.FLAGS


def variants_of(alpha: float, alphas: list[float]) -> list[tuple[str, dict]]:
    """(label, mutual options) of every variant: divergence x gradient flow, then the sweep."""
    variants = [(f"{d}, {'stop-gradient' if sg else 'two-way'}, alpha {alpha:g}",
                 dict(alpha=alpha, divergence=d, stop_gradient=sg))
                for d in ("mse", "kl") for sg in (True, False)]
    variants += [(f"mse, stop-gradient, alpha {a:g}", dict(alpha=a, divergence="mse",
                                                           stop_gradient=True))
                 for a in alphas if a != alpha]
    return variants


# Config keys this runner sets itself (an override of one is refused, naming it).
OWNED = {"mutual.divergence": "mse and kl, one arm each",
         "mutual.stop_gradient": "both, one arm each"}


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup(owned=OWNED)
    alphas = [float(a) for a in FLAGS.alphas.split(",")]
    variants = variants_of(config.mutual.alpha, alphas)
    scores, pretrained = {"control": []}, None
    for seed in seeds:
        pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, config.peers)
        for label, options in [("control", dict(alpha=0.0))] + variants:
            tag = label.replace(", ", "_").replace(" ", "")
            results = paper.run(config, os.path.join(workdir, f"seed{seed}", tag), seed=seed,
                                init_from=pretrain_dir, peers=config.peers, **options)
            aucs = [m["auc"] for n, m in results["test"].items() if n != "ensemble"]
            scores.setdefault(label, []).append(sum(aucs) / len(aucs))
    rows = [{"variant": "control (independent finetune)",
             "mean_auc": report.mean_std(scores["control"]), "gain_pct": "", "verdict": ""}]
    lines, gain_of = [], {}
    for label, options in variants:
        s = analysis.compare("auc", scores[label], scores["control"], effect_pct)
        rows.append({"variant": label, "mean_auc": s["treated"],
                     "gain_pct": f"{s['gain_pct']:+.3f}", "verdict": s["verdict"], "stats": s})
        lines.append(analysis.tests_line(label, s))
        if options["divergence"] == "mse" and options["stop_gradient"]:
            gain_of[options["alpha"]] = s["gains_pct"]
    table = (f"Mutual-term variants vs the independent finetune (peers' mean test AUC, seeds "
             f"{seeds})\n\n"
             + report.markdown_table(rows, [("variant", "variant"), ("mean_auc", "mean AUC"),
                                            ("gain_pct", "gain %"), ("verdict", "paired t")])
             + report.bayes_note(pretrained) + analysis.statistics_block(lines))
    sweep = sorted(gain_of)
    analysis.plot_gain(sweep, [gain_of[a] for a in sweep],
                       os.path.join(workdir, "gain_vs_alpha.png"), xlabel="alpha",
                       title="mse, stop-gradient: gain vs alpha")
    paper.write_outputs(workdir, {"claim": "variants", "seeds": seeds, "scores": scores,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
