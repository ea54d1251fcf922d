"""Statistics, tables and figures for the paper's experiments.

* `paired_t_test`: two-sided paired t-test across seeds (paired by seed and
  data order), with the Student-t CDF computed from the regularised
  incomplete beta function, so no scipy is needed.
* `summarise_pairs`: mean +- std of both arms, relative improvement, the test,
  and a plain-words verdict ("not significant" when p >= level).
* `markdown_table`: rows of dicts -> a markdown table.
* `plot_*`: matplotlib figures saved as PNG (imported lazily; matplotlib is
  needed only to draw them).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

SIGNIFICANCE_LEVEL = 0.05


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def paired_t_test(treated: Sequence[float], control: Sequence[float]) -> dict[str, float]:
    """Two-sided paired t-test of treated - control.

    Returns:
      {'n', 'mean_diff', 't', 'df', 'p'}; with fewer than 2 pairs, or zero
      variance of the differences, t and p are NaN (no test possible) unless
      every difference is the same non-zero value (t = +-inf, p = 0).
    """
    d = np.asarray(treated, np.float64) - np.asarray(control, np.float64)
    n = len(d)
    out = {"n": n, "mean_diff": float(d.mean()) if n else math.nan, "t": math.nan,
           "df": n - 1, "p": math.nan}
    if n < 2:
        return out
    sd = d.std(ddof=1)
    if sd == 0.0:
        if d.mean() != 0.0:
            out.update(t=math.copysign(math.inf, d.mean()), p=0.0)
        return out
    t = d.mean() / (sd / math.sqrt(n))
    out.update(t=float(t), p=student_t_two_sided_p(float(t), n - 1))
    return out


def relative_improvement(metric: str, control: float, treated: float) -> float:
    """Relative improvement in %, positive = better (AUC up, logloss down)."""
    if metric == "auc":
        return 100.0 * (treated - control) / control
    if metric == "logloss":
        return 100.0 * (control - treated) / control
    raise ValueError(f"unknown metric {metric!r}")


def summarise_pairs(metric: str, treated: Sequence[float], control: Sequence[float],
                    level: float = SIGNIFICANCE_LEVEL) -> dict[str, Any]:
    """Mean +- std of both arms, relative gain of the means, paired test, verdict."""
    treated, control = np.asarray(treated, np.float64), np.asarray(control, np.float64)
    test = paired_t_test(treated, control)
    gain = relative_improvement(metric, float(control.mean()), float(treated.mean()))
    if math.isnan(test["p"]):
        verdict = "no test (fewer than 2 seeds or identical arms)"
    elif test["p"] < level:
        verdict = f"significant (p={test['p']:.3g})"
    else:
        verdict = f"not significant (p={test['p']:.3g})"
    return {
        "metric": metric,
        "treated_mean": float(treated.mean()), "treated_std": float(treated.std(ddof=1)) if len(treated) > 1 else 0.0,
        "control_mean": float(control.mean()), "control_std": float(control.std(ddof=1)) if len(control) > 1 else 0.0,
        "gain_pct": gain, "seeds": len(treated), **{f"test_{k}": v for k, v in test.items()},
        "verdict": verdict,
    }


def mean_std(values: Sequence[float], digits: int = 5) -> str:
    values = np.asarray(values, np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """rows -> markdown; `columns` = [(key, header)], floats printed with 5 digits."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.5f}" if abs(value) < 1e4 else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(k, "-")) for k, _ in columns) + " |")
    return "\n".join(lines)


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
            values = [r[arm][name]["auc"] for r in per_seed if name in r[arm]]
            if values:
                xs.append(i + k * width)
                means.append(np.mean(values))
                stds.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
        ax.bar(xs, means, width, yerr=stds, label=arm, capsize=2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    values = [r[a][n]["auc"] for r in per_seed for a in arms for n in names if n in r[a]]
    ax.set_ylim(min(values) - 0.005, max(values) + 0.003)
    ax.set_ylabel("test AUC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
