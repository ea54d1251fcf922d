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

`pretrain_config` and `finetune_config` are the only places the two phase
schedules are set; the experiments (experiments/paper.py) build their runs
from them too.
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


def pretrain_config(config: ml_collections.ConfigDict,
                    data_dir: str | None = None) -> ml_collections.ConfigDict:
    """An unlocked copy of `config` for independent training from scratch (alpha = 0)."""
    pretrain = config.copy_and_resolve_references()
    with pretrain.unlocked():
        pretrain.mode = "train"
        pretrain.init_from = ""
        pretrain.mutual.alpha = 0.0
        if data_dir is not None:
            pretrain.data.data_dir = data_dir
    return pretrain


def finetune_config(config: ml_collections.ConfigDict, init_from: str,
                    alpha: float) -> ml_collections.ConfigDict:
    """An unlocked copy of `config` finetuning from `init_from`'s best weights.

    The schedule is `config.finetune`'s; alpha = 0 is the independent control.
    """
    finetune = config.copy_and_resolve_references()
    with finetune.unlocked():
        finetune.mode = "train"
        finetune.init_from = init_from
        finetune.mutual.alpha = alpha
        apply_finetune_schedule(finetune, config.finetune)
    return finetune


def phase_configs(config: ml_collections.ConfigDict, workdir: str) -> dict[str, ml_collections.ConfigDict]:
    """The (locked) phase configs of a finetune study; all share the dataset."""
    pretrain = pretrain_config(config, train.dataset_dir(config, workdir))
    init_from = config.init_from or os.path.join(workdir, "pretrain")
    phases = {} if config.init_from else {"pretrain": pretrain}
    phases["finetune_control"] = finetune_config(pretrain, init_from, 0.0)
    phases["finetune_mutual"] = finetune_config(pretrain, init_from, config.mutual.alpha)
    for c in phases.values():
        c.lock()
    return phases


TABLE_COLUMNS = [("peer", "peer"), ("pretrain_auc", "pretrain AUC"),
                 ("pretrain_logloss", "pretrain logloss"), ("control_auc", "control AUC"),
                 ("control_logloss", "control logloss"), ("mutual_auc", "mutual AUC"),
                 ("mutual_logloss", "mutual logloss"), ("auc_gain_pct", "AUC gain %"),
                 ("logloss_gain_pct", "logloss gain %")]


def results_table(results: dict[str, Any], split: str = "test") -> tuple[list[dict], str]:
    """Rows per peer (and ensemble) and the markdown table of one study.

    Args:
      results: {phase: train.train_and_evaluate results}; "pretrain" may be absent.
      split: the split reported.
    """
    control, mutual_ = results["finetune_control"][split], results["finetune_mutual"][split]
    pretrain = results.get("pretrain", {}).get(split, {})
    rows = []
    for name in control:
        row = {"peer": name}
        for phase, metrics in (("pretrain", pretrain), ("control", control), ("mutual", mutual_)):
            if name in metrics:
                row[f"{phase}_auc"] = metrics[name]["auc"]
                row[f"{phase}_logloss"] = metrics[name]["logloss"]
        for metric in ("auc", "logloss"):
            row[f"{metric}_gain_pct"] = report.relative_improvement(
                metric, row[f"control_{metric}"], row[f"mutual_{metric}"])
        rows.append(row)
    header = f"Mutual vs independent finetune ({split} split, seed {results.get('seed', '-')})\n\n"
    table = (header + report.markdown_table(rows, TABLE_COLUMNS)
             + report.bayes_note(results["finetune_control"], split))
    return rows, table


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
    rows, table = results_table({"seed": config.seed, **results})
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
