"""Baselines a fair study needs: one-way distillation, EKTF and the peer ensemble.

Per seed, from the same pretrained peers:
  * control: independent finetune (alpha = 0);
  * KD: each peer distilled one way from the strongest pretrained peer (best
    valid AUC), which is frozen (`mutual.frozen_peers`), one run per student;
  * mutual: the mutual finetune of all peers;
  * EKTF finetune: the same finetune with EKTF's loss (Li et al. 2024, arXiv
    2411.16122; `mutual.transfer=ektf`, mlctr/mutual.py `ektf_terms`): the
    peers' mean logit is a teacher for each, plus peer-to-peer MSE, both
    weighted by a per-batch examination of each peer;
  * ensembles: the averaged prediction of the pretrained, control, mutual and
    EKTF peers.

And EKTF as published, from scratch: `--ektf_students` identical DNN students
(`--ektf_student`, default wide_deep: FuxiCTR's MLP plus a first-order term)
trained with EKTF's loss, against the same students trained independently;
the teacher is the students' ensemble.

  python -m experiments.baselines --workdir=runs/paper/baselines

Writes table.md, results.json and baselines.png (test AUC per peer and arm).
"""
import os

from absl import app
from absl import flags

from experiments import analysis
from experiments import common
from experiments import paper
from mlctr import peer_groups
from mlctr import report

flags.DEFINE_integer("ektf_students", 4, "Students of the from-scratch EKTF baseline (0: skip).")
flags.DEFINE_string("ektf_student", "wide_deep", "Architecture of the EKTF students.")
FLAGS = flags.FLAGS

ARMS = ("pretrain", "control", "kd", "mutual", "ektf")
GAINS = ("kd", "mutual", "ektf")
COLUMNS = [("peer", "peer"), ("pretrain", "pretrained"), ("control", "control finetune"),
           ("kd", "one-way KD"), ("mutual", "mutual finetune"), ("ektf", "EKTF finetune"),
           ("kd_gain", "KD gain % vs control"), ("mutual_gain", "mutual gain % vs control"),
           ("ektf_gain", "EKTF gain % vs control")]


def run_seed(config, workdir, pretrain_root, seed, peers) -> dict:
    """The arms of one seed: {arm: {peer: test metrics}}, and the KD teacher."""
    pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, ",".join(peers))
    teacher = max(peers, key=lambda n: pretrained["valid"][n]["auc"])
    arms = {"pretrain": pretrained["test"]}
    for arm, alpha, transfer in (("control", 0.0, config.mutual.transfer),
                                 ("mutual", config.mutual.alpha, config.mutual.transfer),
                                 ("ektf", 1.0, "ektf")):
        arms[arm] = paper.run(config, os.path.join(workdir, f"seed{seed}", arm), seed=seed,
                              init_from=pretrain_dir, peers=",".join(peers), alpha=alpha,
                              transfer=transfer)["test"]
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
        for arm in GAINS:
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


def ektf_from_scratch(config, workdir, pretrain_root, seeds, effect_pct) -> tuple[str, dict]:
    """EKTF's students trained with its loss vs independently, from scratch: table, results."""
    students = f"{FLAGS.ektf_student}*{FLAGS.ektf_students}"
    per_seed = []
    for seed in seeds:
        _, independent = paper.pretrain(config, pretrain_root, seed, students)
        ektf = paper.run(config, os.path.join(workdir, f"seed{seed}", "ektf_scratch"), seed=seed,
                         peers=students, alpha=1.0, transfer="ektf")
        per_seed.append({"independent": independent["test"], "ektf": ektf["test"]})
    names = list(per_seed[0]["ektf"])
    rows, lines = [], []
    for name in [n for n in names if n != "ensemble"][:1] + ["ensemble"]:
        s = analysis.compare("auc", [r["ektf"][name]["auc"] for r in per_seed],
                             [r["independent"][name]["auc"] for r in per_seed], effect_pct)
        label = "teacher (students' ensemble)" if name == "ensemble" else f"student {name}"
        rows.append({"model": label, "independent": s["control"], "ektf": s["treated"],
                     "gain": f"{s['gain_pct']:+.3f} ({s['verdict']})"})
        lines.append(analysis.tests_line(f"EKTF {label} vs independent", s))
    table = (f"\n\nEKTF from scratch: {students} (test AUC, seeds {seeds})\n\n"
             + report.markdown_table(rows, [("model", "model"), ("independent", "independent"),
                                            ("ektf", "EKTF"), ("gain", "gain % (paired t)")])
             + analysis.statistics_block(lines))
    return table, {"students": students, "per_seed": per_seed, "rows": rows}


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    config.peers = ",".join(paper.name_peers(config, config.peers))
    peers = peer_groups.parse_peer_spec(config.peers)
    per_seed = [run_seed(config, workdir, pretrain_root, s, peers) for s in seeds]
    rows, lines = summarise(per_seed, peers, effect_pct)
    teachers = sorted({r["teacher"] for r in per_seed})
    ektf_table, ektf = ("", None) if FLAGS.ektf_students < 2 else ektf_from_scratch(
        config, workdir, pretrain_root, seeds, effect_pct)
    table = (f"Baselines (test AUC, seeds {seeds}; KD teacher = strongest pretrained peer: "
             f"{', '.join(teachers)}, frozen; ensemble = mean of the peers' probabilities)\n\n"
             + report.markdown_table(rows, COLUMNS) + report.bayes_note(per_seed[0])
             + analysis.statistics_block(lines) + ektf_table)
    analysis.plot_auc_bars(per_seed, peers + ["ensemble"], ARMS,
                           os.path.join(workdir, "baselines.png"))
    paper.write_outputs(workdir, {"claim": "baselines", "seeds": seeds, "per_seed": per_seed,
                                  "rows": rows, "ektf_from_scratch": ektf}, table)


if __name__ == "__main__":
    app.run(main)
