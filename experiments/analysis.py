"""Statistics and figures of the paper's experiments.

Every comparison of two arms paired by seed (same init keys, data order and
dropout rngs) is summarised by `compare`: mean ± sd of both arms, the relative
gain, the paired t-test and Wilcoxon signed-rank test over the per-seed gains,
and the power line: from the seed-to-seed sd of those gains, how many seeds a
paired t-test needs to detect the paper's effect (+0.37% relative AUC on
Criteo, +0.66% on Avazu; the Criteo figure on synthetic data) at p < 0.05 with
power 0.8. `delong` (mlctr/study.py) adds, per run, DeLong's test of the two
arms' AUCs on the same test rows and the rows it would need for the paper's
effect; `delong_lines` summarises it over seeds. The numerics
are mlctr/stats.py (scipy); the tables are mlctr/report.py; matplotlib is
imported only to draw the figures.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from mlctr import report
from mlctr import stats
from mlctr import study

SIGNIFICANCE_LEVEL = study.SIGNIFICANCE_LEVEL
TARGET_POWER = study.TARGET_POWER
# The paper's effect per dataset, and DeLong per peer of two runs: the library's.


def compare(metric: str, treated: Sequence[float], control: Sequence[float],
            effect_pct: float) -> dict[str, Any]:
    """Paired summary of two arms over seeds (see the module docstring).

    Args:
      metric: "auc" or "logloss" (gains are positive when the treated arm is better).
      treated, control: one value per seed, in the same seed order.
      effect_pct: the relative effect (%) the power line is about.
    """
    treated, control = np.asarray(treated, np.float64), np.asarray(control, np.float64)
    gains = [report.relative_improvement(metric, c, t) for c, t in zip(control, treated)]
    out = {"metric": metric, "seeds": len(gains), "gains_pct": gains,
           "treated": report.mean_std(treated), "control": report.mean_std(control),
           "gain_pct": report.relative_improvement(metric, float(control.mean()),
                                                   float(treated.mean())),
           "effect_pct": effect_pct, "p_t": math.nan, "p_wilcoxon": math.nan, "sd": math.nan,
           "seeds_needed": None, "power": math.nan}
    if len(gains) >= 2:
        tests = stats.paired_tests(gains)
        out.update(p_t=tests["p_t"], p_wilcoxon=tests["p_wilcoxon"], sd=tests["sd"])
        if tests["sd"] > 0:
            try:
                out["seeds_needed"] = stats.seeds_needed(
                    tests["sd"], effect_pct, alpha=SIGNIFICANCE_LEVEL, power=TARGET_POWER)
            except ValueError:  # beyond stats.seeds_needed's search range
                out["seeds_needed"] = "> 100000"
            out["power"] = stats.power(tests["sd"], effect_pct, len(gains),
                                       alpha=SIGNIFICANCE_LEVEL)
    out["verdict"] = verdict(out["p_t"])
    return out


def verdict(p: float) -> str:
    """Plain words for a p-value: significant / not significant / no test."""
    if p is None or math.isnan(p):
        return "no test (fewer than 2 seeds or identical arms)"
    word = "significant" if p < SIGNIFICANCE_LEVEL else "not significant"
    return f"{word} (p={p:.3g})"


def _p(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3g}"


def tests_line(label: str, s: dict[str, Any]) -> str:
    """'label: gain ..., paired t p, Wilcoxon p; power line' for one compare() summary."""
    line = (f"- {label}: {s['metric'].upper()} gain {s['gain_pct']:+.3f}% over {s['seeds']} seeds; "
            f"paired t-test p = {_p(s['p_t'])}, Wilcoxon p = {_p(s['p_wilcoxon'])}. ")
    if s["seeds_needed"] is None:
        return line + "Power: no seed-to-seed spread to estimate it from."
    return line + (f"Power: seed-to-seed sd of the gain {s['sd']:.3f}%, so detecting "
                   f"{s['effect_pct']:+.2f}% at p < {SIGNIFICANCE_LEVEL:g} with power "
                   f"{TARGET_POWER:g} needs {s['seeds_needed']} seeds "
                   f"(power with {s['seeds']}: {s['power']:.2f}).")


def delong_lines(per_seed: Sequence[dict[str, dict]], label: str) -> list[str]:
    """Per peer: how many seeds' runs DeLong finds significant, the se and the rows needed."""
    lines = []
    for name in per_seed[0]:
        tests = [d[name] for d in per_seed]
        ps = [t["p"] for t in tests]
        significant = sum(p < SIGNIFICANCE_LEVEL for p in ps)
        needed = [t["rows_needed"] for t in tests if t["rows_needed"]]
        rows = f"~{int(np.median(needed)):,}" if needed else "-"
        lines.append(f"- DeLong, {label}, {name}: p < {SIGNIFICANCE_LEVEL:g} in {significant} of "
                     f"{len(ps)} runs (median p {np.median(ps):.3g}); se of the AUC difference "
                     f"{np.median([t['se'] for t in tests]):.2g} on {tests[0]['rows']:,} test rows; "
                     f"rows needed for the paper's effect: {rows}.")
    return lines


def statistics_block(lines: Sequence[str]) -> str:
    """The statistics printed under a table."""
    return "\n\nStatistics (paired by seed; mlctr/stats.py):\n\n" + "\n".join(lines)


# ---------------------------------------------------------------------------
# Figures.


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_learning_curves(curves: dict[str, dict[str, tuple[list, list]]], path: str, title: str):
    """One panel per peer: valid AUC vs step for each arm ('control', 'mutual', ...).

    Args:
      curves: {peer: {arm: (steps, aucs)}}.
    """
    plt = _pyplot()
    peers = list(curves)
    fig, axes = plt.subplots(1, len(peers), figsize=(4 * len(peers), 3.2), squeeze=False)
    for ax, peer in zip(axes[0], peers):
        for arm, (steps, aucs) in curves[peer].items():
            ax.plot(steps, aucs, marker="o", ms=3, label=arm)
        ax.set_title(peer)
        ax.set_xlabel("step")
        ax.set_ylabel("valid AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gain(xs: Sequence[float], gains: Sequence[Sequence[float]], path: str, *, xlabel: str,
              title: str, labels: Sequence[str] | None = None):
    """Mean gain (%) with a std error bar over seeds, against x.

    Args:
      xs: x positions.
      gains: per x, the gains of each seed.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    means = [float(np.mean(g)) for g in gains]
    stds = [float(np.std(g, ddof=1)) if len(g) > 1 else 0.0 for g in gains]
    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3)
    for x, g in zip(xs, gains):
        ax.scatter([x] * len(g), g, s=8, alpha=0.5, color="gray")
    if labels:
        for x, m, label in zip(xs, means, labels):
            ax.annotate(label, (x, m), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("relative AUC gain (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_auc_bars(per_seed: Sequence[dict], names: Sequence[str], arms: Sequence[str], path: str):
    """Grouped bars: test AUC per peer (group) and arm (bar), mean ± std over seeds.

    Args:
      per_seed: one dict per seed, `r[arm][name]['auc']` (an arm may lack a name).
      names: peers, in the order of the groups.
      arms: the bars of each group, in order.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(0.4 * len(arms) * len(names) + 2, 3.4))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        xs, means, stds = [], [], []
        for i, name in enumerate(names):
            values = [r[arm][name]["auc"] for r in per_seed if name in r.get(arm, {})]
            if values:
                xs.append(i + k * width)
                means.append(np.mean(values))
                stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        ax.bar(xs, means, width, yerr=stds, label=arm, capsize=2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    values = [r[a][n]["auc"] for r in per_seed for a in arms for n in names if n in r.get(a, {})]
    ax.set_ylim(min(values) - 0.005, max(values) + 0.003)
    ax.set_ylabel("test AUC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
