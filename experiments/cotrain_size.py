"""Claim 4: about 4 peers is best — gain of a fixed target peer vs group size N.

All peers of `--order` are pretrained independently once per seed; then the
first N of them (N = 1 .. len(order)) are finetuned mutually from those
weights. The target is the first peer; N = 1 is its independent finetune (the
control). Gain = relative test-AUC improvement of the target over N = 1, with
the paired tests and power line per N and DeLong's test per run.

  python -m experiments.cotrain_size --workdir=runs/paper/cotrain_size \
      --order=deepfm,dcn,ipnn,fibinet,wide_deep

Writes table.md, results.json and gain_vs_n.png.
"""
import os

from absl import app
from absl import flags

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import report
from mlctr import study

flags.DEFINE_string("order", "deepfm,dcn,ipnn,fibinet,wide_deep",
                    "Peers in the order they join; the first is the target.")
FLAGS = flags.FLAGS

COLUMNS = [("N", "N"), ("peers", "peers"), ("target_auc", "target AUC"),
           ("gain_pct", "gain % vs N=1"), ("verdict", "paired t")]


def run_seed(config, workdir, pretrain_root, seed, order, effect_pct) -> dict:
    """The target's test AUC for each N, and DeLong of each N > 1 against N = 1."""
    target = order[0]
    pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, ",".join(order))
    aucs, probs, labels = {}, {}, None
    for n in range(1, len(order) + 1):
        run_dir = os.path.join(workdir, f"seed{seed}", f"n{n}")
        results = paper.run(config, run_dir, seed=seed, init_from=pretrain_dir,
                            peers=",".join(order[:n]), alpha=config.mutual.alpha)
        aucs[n] = results["test"][target]["auc"]
        probs[n], labels = study.split_probabilities(run_dir)
    delong = {n: study.delong(probs[n], probs[1], labels, [target], effect_pct)
              for n in aucs if n > 1}
    return {"seed": seed, "target_auc": aucs, "delong": delong, "bayes": pretrained.get("bayes")}


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    order = paper.name_peers(config, FLAGS.order)
    target = order[0]
    per_seed = [run_seed(config, workdir, pretrain_root, s, order, effect_pct) for s in seeds]
    rows, gains, lines = [], [], []
    control = [r["target_auc"][1] for r in per_seed]
    for n in range(1, len(order) + 1):
        s = analysis.compare("auc", [r["target_auc"][n] for r in per_seed], control, effect_pct)
        gains.append(s["gains_pct"])
        rows.append({"N": n, "peers": "+".join(order[:n]), "target_auc": s["treated"],
                     "gain_pct": f"{s['gain_pct']:+.3f}",
                     "verdict": s["verdict"] if n > 1 else "control", "stats": s})
        if n > 1:
            lines.append(analysis.tests_line(f"{target}, N = {n} vs N = 1", s))
            lines += analysis.delong_lines([r["delong"][n] for r in per_seed], f"N = {n}")
    table = (f"Gain of {target} vs number of peers (test AUC, seeds {seeds}, alpha "
             f"{config.mutual.alpha}, {config.mutual.divergence})\n\n"
             + report.markdown_table(rows, COLUMNS) + report.bayes_note(per_seed[0])
             + analysis.statistics_block(lines))
    analysis.plot_gain(list(range(1, len(order) + 1)), gains, os.path.join(workdir, "gain_vs_n.png"),
                       xlabel="number of peers N", title=f"{target}: gain vs N")
    paper.write_outputs(workdir, {"claim": "cotrain_size", "seeds": seeds, "order": order,
                                  "per_seed": per_seed, "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
