"""What it would take to decide each claim: seeds and test rows for the observed effects.

The tables of the claim entries (finetune, scratch, companions, cotrain_size) say how
many seeds would detect the *paper's* effect. An effect far smaller than the paper's
needs more; this reads finished entries' results.json and prints, per comparison:
the observed mean gain, its seed-to-seed sd and paired t-test p, the seeds a paired
t-test needs to detect that observed gain (p < 0.05, power 0.8), and the test rows one
run's DeLong test needs to detect it (from the median standard error DeLong measured on
the runs' own test rows, se ~ 1 / sqrt(rows)).

  python -m experiments.decide --roots=runs/shared_criteo,runs/shared_avazu > decide.md

Each root holds <entry>/results.json for some of the entries.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Iterator

from absl import app, flags
import numpy as np

from mlctr import report
from mlctr import stats

ENTRIES = ("scratch", "finetune", "companions", "cotrain_size", "cotrain_size5")
COLUMNS = [("root", "results"), ("entry", "claim entry"), ("arm", "comparison"),
           ("gain", "gain %"), ("sd", "sd %"), ("p", "paired t p"),
           ("seeds", "seeds for the observed gain"),
           ("rows", "test rows for one run's DeLong")]


def _comparisons(entry: str, results: dict) -> Iterator[tuple[str, dict, list[dict]]]:
    """(label, stats of the table row, DeLong results of its runs) for one entry."""
    if entry in ("finetune", "scratch"):
        for row in results["rows"]:
            if row.get("metric", "auc") != "auc":
                continue
            peer = row["peer"]
            tests = [s["delong"][peer] for s in results["per_seed"] if peer in s.get("delong", {})]
            yield peer, row.get("auc_stats", row.get("stats")), tests
    elif entry.startswith("cotrain_size"):
        for row in results["rows"][1:]:  # N = 1 is the control
            n = str(row["N"])
            tests = [next(iter(s["delong"][n].values())) for s in results["per_seed"]
                     if n in s.get("delong", {})]
            yield f"N = {n}", row["stats"], tests
    elif entry == "companions":
        for row in results["rows"]:
            tests = [next(iter(r["delong"].values())) for r in results["records"]
                     if r["fraction"] == row["fraction"] and r.get("delong")]
            yield f"companions at {row['fraction']:g}", row["stats"], tests


def _needed(row_stats: dict, tests: list[dict]) -> tuple[Any, Any]:
    """Seeds for the observed gain, rows for one run's DeLong to see it."""
    gain, sd = row_stats["gain_pct"], row_stats["sd"]
    if not gain or not sd or math.isnan(sd):
        return "—", "—"
    try:
        seeds = stats.seeds_needed(sd, gain)
    except ValueError:
        seeds = "> 100000"
    if not tests:
        return seeds, "—"
    se = float(np.median([t["se"] for t in tests]))
    rows = tests[0]["rows"]
    control = float(np.mean([min(t["auc_a"], t["auc_b"]) for t in tests]))
    effect = abs(gain) / 100 * control
    return seeds, (stats.rows_needed(se, rows, effect) if se > 0 else "—")


def decide(roots: list[str]) -> list[dict]:
    """One table row per comparison found under `roots`."""
    out = []
    for root in roots:
        for entry in ENTRIES:
            path = os.path.join(root, entry, "results.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                results = json.load(f)
            for label, row_stats, tests in _comparisons(entry, results):
                seeds, rows = _needed(row_stats, tests)
                out.append({"root": os.path.basename(os.path.normpath(root)), "entry": entry,
                            "arm": label, "gain": f"{row_stats['gain_pct']:+.3f}",
                            "sd": f"{row_stats['sd']:.3f}", "p": f"{row_stats['p_t']:.3g}",
                            "seeds": f"{seeds:,}" if isinstance(seeds, int) else seeds,
                            "rows": f"{rows:,}" if isinstance(rows, int) else rows})
    return out


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_list("roots", None, "Directories holding <entry>/results.json.")
    flags.mark_flag_as_required("roots")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; the roots go in --roots")
    missing = [root for root in FLAGS.roots if not os.path.isdir(root)]
    if missing:
        sys.exit(f"experiments.decide: no such directory: {', '.join(missing)}")
    print(report.markdown_table(decide(FLAGS.roots), COLUMNS))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
