"""The finetune study: pretrain, then independent vs mutual finetune, one table.

    pretrain/          all peers trained independently (alpha = 0)
    finetune_control/  from pretrain/best: independent finetune (alpha = 0)
    finetune_mutual/   from pretrain/best: mutual finetune (alpha = config.mutual.alpha)

The two finetunes share everything but alpha: the starting weights, seed,
data order, dropout rngs, learning rate, epochs and schedule. Gains are
reported against the control, never against the pretrained weights alone
(continued training by itself changes the metrics).

Relative improvement (the paper's convention): AUC gain = (AUC_mutual -
AUC_control) / AUC_control; logloss gain = (logloss_control - logloss_mutual)
/ logloss_control, so positive is better for both.
"""
from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections

from mlctr import report
from mlctr import train


def apply_finetune_schedule(config: ml_collections.ConfigDict,
                            finetune: ml_collections.ConfigDict):
    """Sets the training schedule of a finetune phase from `config.finetune` (in place)."""
    config.optimizer.learning_rate = finetune.learning_rate
    config.train.num_epochs = finetune.num_epochs
    config.train.eval_steps = finetune.eval_steps
    config.train.patience = finetune.patience
    config.train.max_steps = finetune.max_steps


def phase_configs(config: ml_collections.ConfigDict, workdir: str) -> dict[str, ml_collections.ConfigDict]:
    """The three phase configs of a finetune study (all share the dataset)."""
    data_dir = train.dataset_dir(config, workdir)
    pretrain = config.copy_and_resolve_references()
    with pretrain.unlocked():
        pretrain.mode = "train"
        pretrain.data.data_dir = data_dir
        pretrain.mutual.alpha = 0.0
    finetune = {}
    for name, alpha in (("finetune_control", 0.0), ("finetune_mutual", config.mutual.alpha)):
        c = pretrain.copy_and_resolve_references()
        with c.unlocked():
            c.init_from = config.init_from or os.path.join(workdir, "pretrain")
            c.mutual.alpha = alpha
            apply_finetune_schedule(c, config.finetune)
        finetune[name] = c
    phases = {} if config.init_from else {"pretrain": pretrain}
    phases.update(finetune)
    for c in phases.values():
        c.lock()
    return phases


def results_table(results: dict[str, Any], split: str = "test") -> tuple[list[dict], str]:
    """Rows per peer (and ensemble) and a markdown table of the study."""
    control, mutual_ = results["finetune_control"][split], results["finetune_mutual"][split]
    pretrain = results.get("pretrain", {}).get(split, {})
    rows = []
    for name in control:
        row = {"peer": name}
        for phase, metrics in (("pretrain", pretrain), ("control", control), ("mutual", mutual_)):
            if name in metrics:
                row[f"{phase}_auc"] = metrics[name]["auc"]
                row[f"{phase}_logloss"] = metrics[name]["logloss"]
        row["auc_gain_pct"] = report.relative_improvement("auc", row["control_auc"], row["mutual_auc"])
        row["logloss_gain_pct"] = report.relative_improvement("logloss", row["control_logloss"],
                                                row["mutual_logloss"])
        rows.append(row)

    def fmt(row, key):
        return f"{row[key]:.5f}" if key in row else "-"

    lines = [
        f"| peer ({split}) | pretrain AUC | pretrain logloss | control AUC | control logloss "
        "| mutual AUC | mutual logloss | AUC gain % | logloss gain % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['peer']} | {fmt(row, 'pretrain_auc')} | {fmt(row, 'pretrain_logloss')} "
            f"| {fmt(row, 'control_auc')} | {fmt(row, 'control_logloss')} "
            f"| {fmt(row, 'mutual_auc')} | {fmt(row, 'mutual_logloss')} "
            f"| {row['auc_gain_pct']:+.3f} | {row['logloss_gain_pct']:+.3f} |")
    bayes = results["finetune_control"].get("bayes", {}).get(split)
    if bayes:
        lines.append("")
        lines.append(f"Bayes-optimal on this synthetic {split} split (true click probabilities): "
                     f"AUC {bayes['auc']:.5f}, logloss {bayes['logloss']:.5f}.")
    return rows, "\n".join(lines)


def run_finetune_study(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs the phases (skipping pretraining when `init_from` is set) and the table.

    Writes <workdir>/results.json and <workdir>/results.md and returns the
    results dict (per phase results, table rows).
    """
    os.makedirs(workdir, exist_ok=True)
    results = {}
    for phase, phase_config in phase_configs(config, workdir).items():
        logging.info("=== %s ===", phase)
        results[phase] = train.train_and_evaluate(phase_config, os.path.join(workdir, phase))
    rows, table = results_table(results)
    summary = {
        "command_config": json.loads(config.to_json_best_effort()),
        "split": "test",
        "seed": config.seed,
        "rows": rows,
        "phases": results,
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(summary, f, indent=1)
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(table + "\n")
    print(table, flush=True)
    return summary
