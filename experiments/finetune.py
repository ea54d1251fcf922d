"""Claim 2: mutual finetuning of pretrained peers improves them.

From the same pretrained checkpoints (per seed): the independent finetune
control (alpha = 0) vs the mutual finetune — same steps, schedule, data order
and dropout rngs. This is the library's finetune study (mlctr/study.py, what
`bash launch.sh` runs for one seed) over several seeds with a shared, cached
pretraining: per peer (and the peers' averaged-prediction ensemble) test AUC /
logloss mean ± std, relative improvement, paired t-test and Wilcoxon over
seeds, the power line, and DeLong's test per seed on the same test rows.

  python -m experiments.finetune --workdir=runs/paper/finetune --pretrain_root=runs/paper/pretrain

Writes table.md, results.json and curves.png (valid AUC vs step, first seed).
"""
import os

from absl import app

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import report
from mlctr import study

COLUMNS = [("peer", "peer"), ("pretrain", "pretrain AUC"), ("control", "control AUC"),
           ("mutual", "mutual AUC"), ("auc_gain", "AUC gain %"), ("auc_verdict", "AUC paired t"),
           ("logloss_gain", "logloss gain %"), ("logloss_verdict", "logloss paired t")]


def run_seed(config, workdir: str, pretrain_root: str, seed: int, effect_pct: float) -> dict:
    """Pretrain (cached), both finetunes, the study's rows and DeLong per peer for one seed."""
    pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, config.peers)
    phases, dirs = {"pretrain": pretrained}, {}
    for arm, alpha in (("control", 0.0), ("mutual", config.mutual.alpha)):
        dirs[arm] = os.path.join(workdir, f"seed{seed}", arm)
        phases[f"finetune_{arm}"] = paper.run(config, dirs[arm], seed=seed, peers=config.peers,
                                              alpha=alpha, init_from=pretrain_dir)
    rows, _ = study.results_table(phases)
    (mutual_p, labels), (control_p, _) = (study.split_probabilities(dirs["mutual"]),
                                          study.split_probabilities(dirs["control"]))
    return {"seed": seed, "rows": {r["peer"]: r for r in rows}, "dirs": dirs,
            "delong": study.delong(mutual_p, control_p, labels, list(control_p), effect_pct),
            "bayes": pretrained.get("bayes")}


def summarise(per_seed: list[dict], effect_pct: float) -> tuple[list[dict], list[str]]:
    """Table rows and statistics lines over seeds."""
    rows, lines = [], []
    for name in per_seed[0]["rows"]:
        values = {key: [r["rows"][name][key] for r in per_seed]
                  for key in per_seed[0]["rows"][name] if key != "peer"}
        row = {"peer": name, **{p: report.mean_std(values[f"{p}_auc"])
                                for p in ("pretrain", "control", "mutual")}}
        for metric in ("auc", "logloss"):
            s = analysis.compare(metric, values[f"mutual_{metric}"], values[f"control_{metric}"],
                                 effect_pct)
            row[f"{metric}_gain"] = f"{s['gain_pct']:+.3f}"
            row[f"{metric}_verdict"] = s["verdict"]
            row[f"{metric}_stats"] = s
            if metric == "auc":
                lines.append(analysis.tests_line(f"{name}, mutual vs control", s))
        rows.append(row)
    lines += analysis.delong_lines([r["delong"] for r in per_seed], "mutual vs control")
    return rows, lines


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    per_seed = [run_seed(config, workdir, pretrain_root, s, effect_pct) for s in seeds]
    rows, lines = summarise(per_seed, effect_pct)
    table = (f"Mutual vs independent finetune from the same pretrained peers (test split, seeds "
             f"{seeds}, alpha {config.mutual.alpha}, {config.mutual.divergence}, finetune lr "
             f"{config.finetune.learning_rate}, {config.finetune.num_epochs} epoch(s))\n\n"
             + report.markdown_table(rows, COLUMNS) + report.bayes_note(per_seed[0])
             + analysis.statistics_block(lines))
    names = [n for n in per_seed[0]["rows"] if n != "ensemble"]
    curves = {arm: paper.learning_curves(per_seed[0]["dirs"][arm], names)
              for arm in ("control", "mutual")}
    analysis.plot_learning_curves({n: {arm: curves[arm][n] for arm in curves} for n in names},
                                  os.path.join(workdir, "curves.png"),
                                  f"finetune, seed {seeds[0]}")
    paper.write_outputs(workdir, {"claim": "finetune", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
