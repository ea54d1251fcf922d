"""Does the mutual-finetune gain grow with the diversity of the peers? Peer sets at fixed data.

The data and the target peer stay fixed; only the target's companions change, from
copies of its own architecture (differing by initialisation only) to three other
architectures, so the peers' disagreement varies for a known reason. Default sets
(--peer_sets, `name=peer+peer+...;...`, every set starting with the target):

  same  deepfm + deepfm_b + deepfm_c + deepfm_d   four DeepFMs, different init
  mix   deepfm + deepfm_b + dcn + dcn_b           two architectures x 2
  arch  deepfm + dcn + ipnn + fibinet             the paper's four architectures

Per seed: every peer of every set pretrained independently in one run (BARS schedule,
each peer to its own early stop; experiments/configs/diversity_peers.py names the
copies), so the target starts every set from the same weights; one independent finetune
of all of them (the control of every peer: alpha 0 makes the peers independent); one
mutual finetune per set. Per set, over seeds: the pretrained set's disagreement on the
test rows (mean |p_i - p_j| over pairs, mean logit correlation), its ensemble's gain
over its best peer, the companions' AUC, and the target's and the set's mean mutual
gain over the control with paired tests, power line and DeLong per run; then the
target's mutual AUC of the most diverse set against the least diverse one (paired by
seed) and a least-squares slope of the target's gain on the disagreement over the
per-seed points, with its 95% CI.

  python -m experiments.peer_diversity --config=experiments/configs/diversity_peers.py \
      --workdir=runs/diversity_peers/synthetic --seeds=0,1,2,3,4 \
      --results_dir=experiments/results

Writes table.md, results.json and gain_vs_disagreement.png to the workdir; with
--results_dir also peer_diversity_<dataset>_table.md / _results.json / _gain.png there.
Every seed is cached (<workdir>/cells/), so an interrupted study resumes.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil

from absl import app
from absl import flags
import numpy as np
from scipy import stats as scipy_stats

from experiments import analysis
from experiments import common
from experiments import diversity  # disagreement(); defines --results_dir
from experiments import paper
from mlctr import metrics
from mlctr import peer_groups
from mlctr import report
from mlctr import study

DEFAULT_SETS = ("same=deepfm+deepfm_b+deepfm_c+deepfm_d;mix=deepfm+deepfm_b+dcn+dcn_b;"
                "arch=deepfm+dcn+ipnn+fibinet")
flags.DEFINE_string("peer_sets", DEFAULT_SETS,
                    "Peer sets, 'name=peer+peer+...;...', least diverse first; every set "
                    "starts with the same target peer.")
FLAGS = flags.FLAGS

COLUMNS = [("set", "peer set"), ("peers", "peers"), ("seeds", "seeds"),
           ("abs_diff", "mean abs(p_i - p_j)"), ("logit_corr", "logit corr."),
           ("companion_auc", "companions' AUC"), ("ensemble_gain", "ensemble vs best peer %"),
           ("target_control", "target control AUC"), ("target_mutual", "target mutual AUC"),
           ("target_gain", "target gain %"), ("target_p", "paired t p"),
           ("mean_gain", "peers' mean gain %"), ("mean_p", "paired t p (mean)")]


def parse_peer_sets(spec: str, models) -> dict[str, list[str]]:
    """'name=a+b;...' -> {name: [peers]}, checked against the config's model sets.

    Raises:
      ValueError: one line naming --peer_sets and the faulty entry: a missing '=' or
        name, a repeated set name, fewer than 2 peers, a repeated peer, a peer with no
        hyperparameter set in config.models, or sets with different first peers.
    """
    sets = {}
    for entry in (e.strip() for e in spec.split(";")):
        if not entry:
            continue
        name, eq, peers = (part.strip() for part in entry.partition("="))
        if not eq or not name:
            raise ValueError(f"--peer_sets: entry {entry!r} is not name=peer+peer+...")
        if name in sets:
            raise ValueError(f"--peer_sets: set {name!r} is given twice")
        try:
            keys = peer_groups.parse_peer_spec(peers)
        except ValueError as e:
            raise ValueError(f"--peer_sets: set {name!r}: {e}") from None
        if len(keys) < 2 or len(set(keys)) != len(keys) or any("*" in k for k in keys):
            raise ValueError(f"--peer_sets: set {name!r} needs >= 2 distinct peers, each named "
                             f"once (copies are their own keys, e.g. deepfm_b); got {peers!r}")
        unknown = [k for k in keys if k not in models]
        if unknown:
            raise ValueError(f"--peer_sets: set {name!r}: {unknown[0]!r} has no hyperparameter "
                             f"set in config.models (known: {', '.join(sorted(models))})")
        sets[name] = keys
    if not sets:
        raise ValueError(f"--peer_sets: no peer set in {spec!r}")
    targets = {keys[0] for keys in sets.values()}
    if len(targets) > 1:
        raise ValueError(f"--peer_sets: every set must start with the same target peer; "
                         f"got {sorted(targets)}")
    return sets


def all_peers(sets: dict[str, list[str]]) -> list[str]:
    """Every peer of every set, once, in order of first appearance (target first)."""
    return list(dict.fromkeys(p for keys in sets.values() for p in keys))


def set_statistics(probs: dict[str, np.ndarray], labels: np.ndarray,
                   keys: list[str]) -> dict[str, float]:
    """One pretrained set on the test rows: disagreement, ensemble gain, companions' AUC."""
    aucs = {k: metrics.auc(labels, probs[k]) for k in keys}
    ensemble = metrics.auc(labels, np.mean([probs[k] for k in keys], axis=0))
    best = max(aucs.values())
    return {**diversity.disagreement(probs, keys), "ensemble_auc": float(ensemble),
            "best_auc": float(best),
            "ensemble_gain_pct": report.relative_improvement("auc", best, ensemble),
            "companion_auc": float(np.mean([aucs[k] for k in keys[1:]]))}


def _finetune(config, run_dir: str, seed: int, peers: list[str], alpha: float,
              init_from: str) -> tuple[dict, dict]:
    """A finetune run's test metrics and its peers' test probabilities."""
    result = paper.run(config, run_dir, seed=seed, peers=",".join(peers), alpha=alpha,
                       init_from=init_from)
    probs, _ = study.split_probabilities(run_dir, "test")
    return result["test"], probs


def run_seed(config, workdir: str, pretrain_root: str, seed: int,
             sets: dict[str, list[str]], effect_pct: float) -> dict:
    """One seed: pretrain every peer, the control finetune, a mutual finetune per set.

    Cached in <workdir>/cells/seed<seed>.json (keyed by the peer sets too).
    """
    path = os.path.join(workdir, "cells", f"seed{seed}.json")
    if os.path.exists(path):
        with open(path) as f:
            cell = json.load(f)
        if cell["sets"] == sets:
            return cell
        raise ValueError(f"{path} holds other peer sets ({cell['sets']}); choose another "
                         "--workdir")
    peers = all_peers(sets)
    target = peers[0]
    pretrain_dir, pretrained = paper.pretrain(config, pretrain_root, seed, ",".join(peers))
    probs, labels = study.split_probabilities(pretrain_dir, "test")
    seed_dir = os.path.join(workdir, f"seed{seed}")
    control, control_p = _finetune(config, os.path.join(seed_dir, "control"), seed, peers, 0.0,
                                   pretrain_dir)
    cell = {"seed": seed, "sets": sets, "pretrain": pretrained["test"],
            "bayes": pretrained.get("bayes"), "control": control, "per_set": {}}
    for name, keys in sets.items():
        mutual_test, mutual_p = _finetune(config, os.path.join(seed_dir, f"mutual_{name}"), seed,
                                          keys, config.mutual.alpha, pretrain_dir)
        cell["per_set"][name] = {
            **set_statistics(probs, labels, keys), "mutual": mutual_test,
            "delong": study.delong(mutual_p, control_p, labels, [target], effect_pct)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(cell, f, indent=1, default=float)
    os.replace(path + ".tmp", path)
    return cell


def set_summary(cells: list[dict], name: str, keys: list[str], effect_pct: float) -> dict:
    """One set over seeds: the table row's values and the target's / mean's compare()."""
    per = [c["per_set"][name] for c in cells]
    target = keys[0]
    target_s = analysis.compare("auc", [p["mutual"][target]["auc"] for p in per],
                                [c["control"][target]["auc"] for c in cells], effect_pct)
    mean_s = analysis.compare(
        "auc", [np.mean([p["mutual"][k]["auc"] for k in keys]) for p in per],
        [np.mean([c["control"][k]["auc"] for k in keys]) for c in cells], effect_pct)
    return {"set": name, "peers": "+".join(keys), "seeds": len(cells),
            "abs_diff": report.mean_std([p["mean_abs_diff"] for p in per], 4),
            "logit_corr": report.mean_std([p["logit_corr"] for p in per], 3),
            "companion_auc": report.mean_std([p["companion_auc"] for p in per]),
            "ensemble_gain": report.mean_std([p["ensemble_gain_pct"] for p in per], 3),
            "target_control": target_s["control"], "target_mutual": target_s["treated"],
            "target_gain": f"{target_s['gain_pct']:+.3f}", "target_p": target_s["p_t"],
            "mean_gain": f"{mean_s['gain_pct']:+.3f}", "mean_p": mean_s["p_t"],
            "disagreements": [p["mean_abs_diff"] for p in per], "target": target_s,
            "mean": mean_s}


def slope_fit(xs, ys) -> dict:
    """Least-squares slope of ys on xs (scipy.stats.linregress) with its 95% CI."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if len(xs) < 3 or np.ptp(xs) == 0:
        return {"n": int(len(xs)), "slope": float("nan"), "ci": [float("nan")] * 2,
                "intercept": float("nan"), "r": float("nan"), "p": float("nan")}
    fit = scipy_stats.linregress(xs, ys)
    half = scipy_stats.t.ppf(0.975, len(xs) - 2) * fit.stderr
    return {"n": int(len(xs)), "slope": float(fit.slope), "intercept": float(fit.intercept),
            "ci": [float(fit.slope - half), float(fit.slope + half)], "r": float(fit.rvalue),
            "p": float(fit.pvalue)}


def summarise(cells: list[dict], sets: dict[str, list[str]], effect_pct: float):
    """(rows, statistics lines, slope fit) over the seeds of `cells`."""
    rows = [set_summary(cells, name, keys, effect_pct) for name, keys in sets.items()]
    lines = []
    for row in rows:
        lines.append(analysis.tests_line(f"{row['set']}, target {sets[row['set']][0]}",
                                         row["target"]))
        lines.append(analysis.tests_line(f"{row['set']}, mean of its peers", row["mean"]))
        lines += analysis.delong_lines([c["per_set"][row["set"]]["delong"] for c in cells],
                                       row["set"])
    first, last = list(sets)[0], list(sets)[-1]
    target = sets[first][0]
    if first != last:
        s = analysis.compare("auc", [c["per_set"][last]["mutual"][target]["auc"] for c in cells],
                             [c["per_set"][first]["mutual"][target]["auc"] for c in cells],
                             effect_pct)
        lines.append(analysis.tests_line(f"{target} mutual with set {last} vs with set {first}",
                                         s))
    xs = [x for row in rows for x in row["disagreements"]]
    ys = [g for row in rows for g in row["target"]["gains_pct"]]
    fit = slope_fit(xs, ys)
    lines.append(f"- Slope of {target}'s gain (%) on mean abs(p_i - p_j), least squares over "
                 f"the {fit['n']} (set, seed) points: {fit['slope']:+.3g} % per unit "
                 f"(95% CI {fit['ci'][0]:+.3g} .. {fit['ci'][1]:+.3g}; r = {fit['r']:.2f}, "
                 f"p = {fit['p']:.3g}); the points of one seed share the target's weights, so "
                 "the CI is optimistic.")
    return rows, lines, fit


def plot(rows: list[dict], fit: dict, path: str, title: str):
    """Target gain vs disagreement: per set mean with sd bars both ways, seeds, the fit."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for row in rows:
        xs, ys = np.asarray(row["disagreements"]), np.asarray(row["target"]["gains_pct"])
        sd = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
        ax.scatter(xs, ys, s=10, alpha=0.5, color="gray")
        ax.errorbar([xs.mean()], [ys.mean()], xerr=[sd(xs)], yerr=[sd(ys)], marker="o",
                    capsize=3, label=f"{row['set']}: {row['peers']}")
    if not np.isnan(fit["slope"]):
        span = np.linspace(*ax.get_xlim(), 2)
        ax.plot(span, fit["intercept"] + fit["slope"] * span, "k--", lw=1,
                label=f"fit: slope {fit['slope']:+.3g} (95% CI {fit['ci'][0]:+.2g}.."
                      f"{fit['ci'][1]:+.2g})")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("pretrained peers' mean abs(p_i - p_j) on the test rows")
    ax.set_ylabel("target's relative AUC gain (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table_text(rows, lines, sets, cells, config, dataset: str) -> str:
    seeds = sorted(c["seed"] for c in cells)
    target = next(iter(sets.values()))[0]
    return (f"Mutual-finetune gain vs peer diversity at fixed data ({dataset}; seeds {seeds}; "
            f"test split; target {target}, the same pretrained weights in every set; "
            f"disagreement, companions' AUC and ensemble of the pretrained set; mutual alpha "
            f"{config.mutual.alpha} {config.mutual.divergence}, finetune lr "
            f"{config.finetune.learning_rate}, up to {config.finetune.num_epochs} epoch(s); "
            f"control: every peer finetuned independently from the same weights)\n\n"
            + report.markdown_table(rows, COLUMNS) + report.bayes_note(cells[0])
            + analysis.statistics_block(lines))


def main(argv):
    del argv
    config, workdir, seeds, pretrain_root, effect_pct = common.setup()
    sets = parse_peer_sets(FLAGS.peer_sets, config.models)
    cells = []
    for seed in seeds:
        cells.append(run_seed(config, workdir, pretrain_root, seed, sets, effect_pct))
        rows, lines, fit = summarise(cells, sets, effect_pct)
        results = {"claim": "peer_diversity", "date": datetime.date.today().isoformat(),
                   "dataset": FLAGS.dataset, "sets": sets, "seeds": [c["seed"] for c in cells],
                   "config": config.to_dict(), "cells": cells, "rows": rows, "fit": fit}
        paper.write_outputs(workdir, results,
                            table_text(rows, lines, sets, cells, config, FLAGS.dataset))
        plot(rows, fit, os.path.join(workdir, "gain_vs_disagreement.png"),
             f"mutual gain vs peer disagreement ({FLAGS.dataset}, {len(cells)} seeds)")
    if FLAGS.results_dir:
        os.makedirs(FLAGS.results_dir, exist_ok=True)
        prefix = os.path.join(FLAGS.results_dir, f"peer_diversity_{FLAGS.dataset}")
        for name, suffix in (("table.md", "_table.md"), ("results.json", "_results.json"),
                             ("gain_vs_disagreement.png", "_gain.png")):
            shutil.copyfile(os.path.join(workdir, name), prefix + suffix)


if __name__ == "__main__":
    app.run(main)
