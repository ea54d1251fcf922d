"""Markdown tables of results: the one table writer of mlctr and its experiments.

A table is rows of dicts and a list of (key, header) columns (`markdown_table`);
a run's own table (`run_table`), the finetune study's table (mlctr/study.py) and
the experiments' tables (experiments/) are all written by it, with the same
Bayes-optimal footnote (`bayes_note`) on synthetic data. No plotting and no
statistics here: the library writes tables; experiments/analysis.py adds the
tests and figures.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def relative_improvement(metric: str, control: float, treated: float) -> float:
    """Relative improvement in %, positive = better (AUC up, logloss down)."""
    if metric == "auc":
        return 100.0 * (treated - control) / control
    if metric == "logloss":
        return 100.0 * (control - treated) / control
    raise ValueError(f"unknown metric {metric!r}")


def mean_std(values: Sequence[float], digits: int = 5) -> str:
    """'mean ± sample sd' of `values` (sd 0 for one value)."""
    values = np.asarray(values, np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """rows -> markdown; `columns` = [(key, header)], floats with 5 digits, '-' if absent."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k, "-")) for k, _ in columns) + " |")
    return "\n".join(lines)


def bayes_note(results: dict | None, split: str = "test") -> str:
    """The footnote with a synthetic split's Bayes-optimal metrics ('' for real data).

    Args:
      results: a run's results (train.train_and_evaluate), holding "bayes" on synthetic data.
      split: the split the table reports.
    """
    bayes = ((results or {}).get("bayes") or {}).get(split)
    if not bayes:
        return ""
    return (f"\n\nBayes-optimal on this synthetic {split} split (true click probabilities): "
            f"AUC {bayes['auc']:.5f}, logloss {bayes['logloss']:.5f}.")


def run_table(results: dict) -> str:
    """The table of one run: each peer's best weights on valid (and test), best steps.

    Args:
      results: what train.train_and_evaluate returns ("peers", "steps",
        "schedule.best_step", per split {peer: {"auc", "logloss"}}).
    """
    splits = [s for s in ("valid", "test") if s in results]
    rows, columns = [], [("peer", "peer")]
    for split in splits:
        columns += [(f"{split}_auc", f"{split} AUC"), (f"{split}_logloss", f"{split} logloss")]
    for name in results[splits[0]]:
        row = {"peer": name}
        for split in splits:
            row[f"{split}_auc"] = results[split][name]["auc"]
            row[f"{split}_logloss"] = results[split][name]["logloss"]
        rows.append(row)
    best_steps = ", ".join(f"{n} {s}" for n, s in zip(results["peers"],
                                                      results["schedule"]["best_step"]))
    return (markdown_table(rows, columns) + bayes_note(results, splits[-1])
            + f"\n\n{results['steps']} steps; best step per peer: {best_steps}\n")
