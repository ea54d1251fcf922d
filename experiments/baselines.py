"""Baselines a fair study needs: one-way distillation and the peer ensemble.

Per seed, from the same pretrained peers:
  * control: independent finetune (alpha = 0);
  * KD: each peer distilled one way from the strongest pretrained peer (best
    valid AUC), which is frozen (`mutual.frozen_peers`), one run per student;
  * mutual: the mutual finetune of all peers;
  * ensembles: the averaged prediction of the pretrained, control and mutual peers.

  python -m experiments.baselines --workdir=runs/paper/baselines

Writes table.md, results.json and baselines.png (test AUC per peer and arm).
"""
import os

from absl import app

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import report

ARMS = ("pretrain", "control", "kd", "mutual")
COLUMNS = [("peer", "peer"), ("pretrain", "pretrained"), ("control", "control finetune"),
           ("kd", "one-way KD"), ("mutual", "mutual finetune"),
           ("kd_gain", "KD gain % vs control"), ("mutual_gain", "mutual gain % vs control")]


def run_seed(config, workdir, pretrain_root, seed, peers) -> dict:
    """The arms of one seed: {arm: {peer: test metrics}}, and the KD teacher."""
    pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, ",".join(peers))
    teacher = max(peers, key=lambda n: pretrained["valid"][n]["auc"])
    arms = {"pretrain": pretrained["test"]}
    for arm, alpha in (("control", 0.0), ("mutual", config.mutual.alpha)):
        arms[arm] = paper.run(config, os.path.join(workdir, f"seed{seed}", arm), seed=seed,
                              init_from=pretrain_dir, peers=",".join(peers), alpha=alpha)["test"]
    arms["kd"] = {teacher: arms["pretrain"][teacher]}
    for student in (p for p in peers if p != teacher):
        results = paper.run(config, os.path.join(workdir, f"seed{seed}", f"kd_{student}"),
                            seed=seed, init_from=pretrain_dir, peers=f"{student},{teacher}",
                            alpha=config.mutual.alpha, frozen_peers=teacher)
        arms["kd"][student] = results["test"][student]
    return {"seed": seed, "teacher": teacher, "bayes": pretrained.get("bayes"), **arms}


def summarise(per_seed, peers, effect_pct) -> tuple[list[dict], list[str]]:
    """Rows (mean ± sd per arm, gains vs control) and the statistics lines."""
    rows, lines = [], []
    for name in peers + ["ensemble"]:
        row = {"peer": name}
        for arm in ARMS:
            if all(name in r[arm] for r in per_seed):
                row[arm] = report.mean_std([r[arm][name]["auc"] for r in per_seed])
        for arm in ("kd", "mutual"):
            if arm == "kd" and any(name == r["teacher"] for r in per_seed):
                # The teacher is not trained in the KD arm: its "KD" AUC is its pretrained one.
                row["kd_gain"] = "teacher (frozen)" if all(
                    name == r["teacher"] for r in per_seed) else "teacher in some seeds"
                continue
            if all(name in r[arm] for r in per_seed):
                s = analysis.compare("auc", [r[arm][name]["auc"] for r in per_seed],
                                     [r["control"][name]["auc"] for r in per_seed], effect_pct)
                row[f"{arm}_gain"] = f"{s['gain_pct']:+.3f} ({s['verdict']})"
                lines.append(analysis.tests_line(f"{name}, {arm} vs control", s))
        rows.append(row)
    return rows, lines


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    peers = common.peer_list(config.peers)
    per_seed = [run_seed(config, workdir, pretrain_root, s, peers) for s in seeds]
    rows, lines = summarise(per_seed, peers, effect_pct)
    teachers = sorted({r["teacher"] for r in per_seed})
    table = (f"Baselines (test AUC, seeds {seeds}; KD teacher = strongest pretrained peer: "
             f"{', '.join(teachers)}, frozen; ensemble = mean of the peers' probabilities)\n\n"
             + report.markdown_table(rows, COLUMNS) + report.bayes_note(per_seed[0])
             + analysis.statistics_block(lines))
    analysis.plot_auc_bars(per_seed, peers + ["ensemble"], ARMS,
                           os.path.join(workdir, "baselines.png"))
    paper.write_outputs(workdir, {"claim": "baselines", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows}, table)


if __name__ == "__main__":
    app.run(main)
