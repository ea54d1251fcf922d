"""Claim 3: stronger companions help more.

The target (first peer of config.peers) always starts from its fully
pretrained weights; its companions (the other peers) start from checkpoints
pretrained for a fraction of the full pretraining steps (`--fractions`), so
their strength varies while everything else is fixed. Gain = relative test-AUC
improvement of the target's mutual finetune over its independent finetune,
with the paired tests and power line per fraction and DeLong's test per run.

  python -m experiments.companions --workdir=runs/paper/companions --fractions=0.05,0.2,1.0

Writes table.md, results.json and gain_vs_companion_auc.png.
"""
import os

from absl import app
from absl import flags

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import peer_groups
from mlctr import report
from mlctr import study

flags.DEFINE_string("fractions", "0.05,0.2,1.0",
                    "Companion pretraining length as fractions of the full pretraining.")
FLAGS = flags.FLAGS

COLUMNS = [("fraction", "companion pretraining fraction"), ("companion_steps", "steps"),
           ("companion_auc", "companion mean AUC"), ("control_auc", "target control AUC"),
           ("mutual_auc", "target mutual AUC"), ("gain_pct", "gain %"), ("verdict", "paired t")]


def run_seed(config, workdir, pretrain_root, seed, fractions, effect_pct) -> list[dict]:
    """The target's control and its mutual finetune with companions of each strength."""
    peers = peer_groups.parse_peer_spec(config.peers)
    target, companions = peers[0], peers[1:]
    full_dir, full = paper.pretrain(config, pretrain_root, seed, ",".join(peers))
    control_dir = os.path.join(workdir, f"seed{seed}", "control")
    control = paper.run(config, control_dir, seed=seed, init_from=full_dir, peers=target)
    control_p, labels = study.split_probabilities(control_dir)
    records = []
    for fraction in fractions:
        steps = max(1, int(round(fraction * full["steps"]))) if fraction < 1 else 0
        weak_dir, weak = (full_dir, full) if steps == 0 else paper.pretrain(
            config, pretrain_root, seed, ",".join(companions), max_steps=steps)
        init_dir = paper.combine_weights({target: full_dir, **{c: weak_dir for c in companions}},
                                         os.path.join(workdir, f"seed{seed}", f"init_f{fraction}"))
        mutual_dir = os.path.join(workdir, f"seed{seed}", f"mutual_f{fraction}")
        mutual_run = paper.run(config, mutual_dir, seed=seed, init_from=init_dir,
                           peers=",".join(peers), alpha=config.mutual.alpha)
        mutual_p, _ = study.split_probabilities(mutual_dir)
        records.append({
            "seed": seed, "fraction": fraction, "companion_steps": steps or full["steps"],
            "companion_auc": sum(weak["test"][c]["auc"] for c in companions) / len(companions),
            "control_auc": control["test"][target]["auc"],
            "mutual_auc": mutual_run["test"][target]["auc"], "bayes": full.get("bayes"),
            "delong": study.delong(mutual_p, control_p, labels, [target], effect_pct)})
    return records


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    config.peers = ",".join(paper.name_peers(config, config.peers))
    target = peer_groups.parse_peer_spec(config.peers)[0]
    fractions = [float(f) for f in FLAGS.fractions.split(",")]
    records = [r for s in seeds
               for r in run_seed(config, workdir, pretrain_root, s, fractions, effect_pct)]
    rows, xs, gains, lines = [], [], [], []
    for fraction in fractions:
        rs = [r for r in records if r["fraction"] == fraction]
        s = analysis.compare("auc", [r["mutual_auc"] for r in rs], [r["control_auc"] for r in rs],
                             effect_pct)
        xs.append(sum(r["companion_auc"] for r in rs) / len(rs))
        gains.append(s["gains_pct"])
        rows.append({"fraction": fraction, "companion_steps": rs[0]["companion_steps"],
                     "companion_auc": report.mean_std([r["companion_auc"] for r in rs]),
                     "control_auc": s["control"], "mutual_auc": s["treated"],
                     "gain_pct": f"{s['gain_pct']:+.3f}", "verdict": s["verdict"], "stats": s})
        lines.append(analysis.tests_line(f"{target}, companions at fraction {fraction}", s))
        lines += analysis.delong_lines([r["delong"] for r in rs], f"fraction {fraction}")
    companions = peer_groups.parse_peer_spec(config.peers)[1:]
    table = (f"{target} finetuned with companions {companions} of varied strength "
             f"(test AUC, seeds {seeds}, alpha {config.mutual.alpha}, "
             f"{config.mutual.divergence})\n\n" + report.markdown_table(rows, COLUMNS)
             + report.bayes_note(records[0]) + analysis.statistics_block(lines))
    analysis.plot_gain(xs, gains, os.path.join(workdir, "gain_vs_companion_auc.png"),
                       xlabel="companions' mean test AUC",
                       title=f"{target}: gain vs companion strength",
                       labels=[f"f={f}" for f in fractions])
    paper.write_outputs(workdir, {"claim": "companions", "seeds": seeds, "records": records,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
