"""Claim 2: mutual finetuning of pretrained peers improves them.

From the same pretrained checkpoints (per seed): the independent finetune
control (alpha = 0) vs the mutual finetune — same steps, schedule, data order
and dropout rngs. This is the library's finetune study (mlctr/study.py, what
`bash launch.sh` runs for one seed) over several seeds with a shared, cached
pretraining: per peer (and the peers' averaged-prediction ensemble) test AUC /
logloss mean ± std, relative improvement, paired t-test and Wilcoxon over
seeds, the power line, and DeLong's test per seed on the same test rows.

  python -m experiments.finetune --workdir=runs/paper/finetune --pretrain_root=runs/paper/pretrain

All seeds' pretrainings, then all seeds' control and mutual finetunes, train as replicas
of one program each (experiments/replicas.py; `--seeds=0..9`); `--noreplicas` runs them
one after another, with the same run directories, table and results.json.

Writes table.md, results.json and curves.png (valid AUC vs step, first seed).
"""
import os

from absl import app

from experiments import analysis
from experiments import common
from experiments import paper
from experiments import replicas as replica_runs
from mlctr import report
from mlctr import study
from mlctr.run import logs

COLUMNS = [("peer", "peer"), ("pretrain", "pretrain AUC"), ("control", "control AUC"),
           ("mutual", "mutual AUC"), ("auc_gain", "AUC gain %"), ("auc_verdict", "AUC paired t"),
           ("auc_mde", "AUC MDE %"), ("auc_tost", "AUC TOST 95%"),
           ("logloss_gain", "logloss gain %"), ("logloss_verdict", "logloss paired t")]


def run_seeds(config, workdir: str, pretrain_root: str, seeds: list[int],
              effect_pct: float) -> list[dict]:
    """Pretraining (cached) and both finetunes of every seed, as replicas of one program per
    phase (experiments/replicas.py; --noreplicas: one run after another), then each seed's
    study rows and DeLong per peer."""
    pretrain_runs = [paper.pretrain_run(config, pretrain_root, s, config.peers) for s in seeds]
    pretrained = replica_runs.run_all([(c, d) for d, c in pretrain_runs])
    arms = (("control", 0.0), ("mutual", config.mutual.alpha))
    finetunes = [(paper.run_config(config, seed=s, peers=config.peers, alpha=alpha,
                                   init_from=pretrain_dir),
                  os.path.join(workdir, f"seed{s}", arm))
                 for s, (pretrain_dir, _) in zip(seeds, pretrain_runs) for arm, alpha in arms]
    finetuned = iter(replica_runs.run_all(finetunes))
    per_seed = []
    for s, pre in zip(seeds, pretrained):
        phases = {"pretrain": pre, **{f"finetune_{arm}": next(finetuned) for arm, _ in arms}}
        dirs = {arm: os.path.join(workdir, f"seed{s}", arm) for arm, _ in arms}
        per_seed.append(seed_summary(s, phases, dirs, effect_pct))
    return per_seed


def seed_summary(seed: int, phases: dict, dirs: dict, effect_pct: float) -> dict:
    """One seed's study rows and DeLong per peer, from its runs' results and directories."""
    rows, _ = study.results_table(phases)
    (mutual_p, labels), (control_p, _) = (study.split_probabilities(dirs["mutual"]),
                                          study.split_probabilities(dirs["control"]))
    return {"seed": seed, "rows": {r["peer"]: r for r in rows}, "dirs": dirs,
            "broken": study.broken_notes(phases, [r["peer"] for r in rows]),
            "delong": study.delong(mutual_p, control_p, labels, list(control_p), effect_pct),
            "bayes": phases["pretrain"].get("bayes")}


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
            row[f"{metric}_mde"] = analysis.mde_text(s)
            row[f"{metric}_tost"] = analysis.tost_text(s)
            if metric == "auc":
                lines.append(analysis.tests_line(f"{name}, mutual vs control", s))
        rows.append(row)
    lines += analysis.delong_lines([r["delong"] for r in per_seed], "mutual vs control")
    return rows, lines


def broken_notes(per_seed: list[dict], rows: list[dict]) -> str:
    """Marks (in place) the rows of peers whose predictions broke in some seed's run, and
    returns the notes that say where (`study.broken_notes`)."""
    notes: dict[str, list[str]] = {}
    for result in per_seed:
        for name, note in result.get("broken", {}).items():
            notes.setdefault(name, []).append(f"seed {result['seed']}: {note}")
    for row in rows:
        if row["peer"] in notes:
            row["peer"] = f"{row['peer']} {logs.BROKEN_MARK}"
    return "".join(f"\n\n{logs.BROKEN_MARK} {name}: {'; '.join(parts)}."
                   for name, parts in notes.items())


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    per_seed = run_seeds(config, workdir, pretrain_root, seeds, effect_pct)
    rows, lines = summarise(per_seed, effect_pct)
    notes = broken_notes(per_seed, rows)
    table = (f"Mutual vs independent finetune from the same pretrained peers (test split, seeds "
             f"{seeds}, alpha {config.mutual.alpha}, {config.mutual.divergence}, finetune lr "
             f"{config.finetune.learning_rate}, {config.finetune.num_epochs} epoch(s))\n\n"
             + report.markdown_table(rows, COLUMNS) + report.bayes_note(per_seed[0])
             + notes + analysis.statistics_block(lines))
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
