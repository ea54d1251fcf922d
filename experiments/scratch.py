"""Claim 1: mutual learning from scratch does not improve CTR models.

Independent training vs mutual learning from scratch, the four paper peers,
same seeds, data order and schedule; per peer test AUC/logloss mean ± std over
seeds, relative improvement, paired t-test and Wilcoxon, the power line, and
DeLong's test per seed on the same test rows.

  python -m experiments.scratch --workdir=runs/paper/scratch --pretrain_root=runs/paper/pretrain

Writes table.md, results.json and curves.png (valid AUC vs step, first seed).
"""
import os

from absl import app

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import report
from mlctr import study

COLUMNS = [("peer", "peer"), ("metric", "metric"), ("independent", "independent"),
           ("mutual", "mutual"), ("gain_pct", "gain %"), ("verdict", "paired t")]


def run_seed(config, workdir: str, pretrain_root: str, seed: int, effect_pct: float) -> dict:
    """Independent (the cached pretraining) and mutual training from scratch of one seed."""
    independent_dir, independent = paper.pretrain(config, pretrain_root, seed, config.peers)
    mutual_dir = os.path.join(workdir, f"seed{seed}", "mutual_scratch")
    mutual = paper.run(config, mutual_dir, seed=seed, peers=config.peers,
                       alpha=config.mutual.alpha)
    (mutual_p, labels), (independent_p, _) = (study.split_probabilities(mutual_dir),
                                              study.split_probabilities(independent_dir))
    return {"seed": seed, "independent": independent["test"], "mutual": mutual["test"],
            "independent_dir": independent_dir, "mutual_dir": mutual_dir,
            "bayes": independent.get("bayes"),
            "delong": study.delong(mutual_p, independent_p, labels, list(independent_p),
                                      effect_pct)}


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    per_seed = [run_seed(config, workdir, pretrain_root, s, effect_pct) for s in seeds]
    rows, lines = [], []
    for name in per_seed[0]["independent"]:
        for metric in ("auc", "logloss"):
            s = analysis.compare(metric, [r["mutual"][name][metric] for r in per_seed],
                                 [r["independent"][name][metric] for r in per_seed], effect_pct)
            rows.append({"peer": name, "metric": metric, "independent": s["control"],
                         "mutual": s["treated"], "gain_pct": f"{s['gain_pct']:+.3f}",
                         "verdict": s["verdict"], "stats": s})
            if metric == "auc":
                lines.append(analysis.tests_line(f"{name}, mutual vs independent", s))
    lines += analysis.delong_lines([r["delong"] for r in per_seed], "mutual vs independent")
    table = (f"Mutual learning from scratch vs independent training (test split, seeds {seeds}, "
             f"alpha {config.mutual.alpha}, {config.mutual.divergence})\n\n"
             + report.markdown_table(rows, COLUMNS) + report.bayes_note(per_seed[0])
             + analysis.statistics_block(lines))
    names = [n for n in per_seed[0]["independent"] if n != "ensemble"]
    ind = paper.learning_curves(per_seed[0]["independent_dir"], names)
    mut = paper.learning_curves(per_seed[0]["mutual_dir"], names)
    analysis.plot_learning_curves({n: {"independent": ind[n], "mutual": mut[n]} for n in names},
                                  os.path.join(workdir, "curves.png"),
                                  f"from scratch, seed {seeds[0]}")
    paper.write_outputs(workdir, {"claim": "scratch", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
