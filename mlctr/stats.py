"""Significance tests and power analysis for comparing CTR models, built on scipy.stats.

Two questions come up under every results table:

* Over seeds: is the mean paired difference (treated - control, one pair per seed)
  non-zero? `paired_tests` runs the paired t-test and, beside it, the Wilcoxon
  signed-rank test, which does not assume normal differences (few seeds).
  `power` / `seeds_needed` say how many seeds a paired t-test needs to detect an
  effect of a given size, from the seed-to-seed spread of the differences.
* Within one run: do two models' AUCs on the same test rows differ? `delong_test`
  is DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more
  correlated receiver operating characteristic curves", with the O(n log n) midrank
  algorithm of Sun & Xu (2014), "Fast implementation of DeLong's algorithm for
  comparing the areas under correlated receiver operating characteristic curves".
  `rows_needed` scales its standard error to the rows needed to detect an effect.
* What a null or small result rules out. `mde_paired_t` (over the seeds run) and
  `mde_normal` (DeLong's z-test at one run's test rows) are the minimum detectable
  effect: the smallest true difference the test would find with the given power.
  Where a difference is not significant, the two one-sided tests (TOST; Schuirmann
  1987) say how close to zero it is: `equivalence_margin_paired` /
  `equivalence_margin_normal` are the smallest margin X for which both one-sided tests
  reject at alpha, i.e. "the effect lies within +-X at 1 - alpha" (X is the larger
  absolute end of the 1 - 2 alpha confidence interval).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

from mlctr import metrics


def paired_tests(differences) -> dict:
    """Paired t-test and Wilcoxon signed-rank test of differences against zero.

    Args:
        differences: per-pair differences (e.g. treated AUC - control AUC per seed).

    Returns:
        {'n', 'mean', 'sd', 't', 'p_t', 'p_wilcoxon'}: sd with ddof=1, two-sided
        p-values. With fewer than 2 pairs no test is possible: sd, t and both p are
        NaN. If every difference is 0, t = 0 and both p are 1.0; if every difference
        is the same non-zero value, t = +-inf, p_t = 0.0 (the t-test's limit) and
        p_wilcoxon comes from the signed-rank test as usual.

    Raises:
        ValueError: if a difference is NaN or infinite.
    """
    diffs = np.asarray(differences, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(diffs)):
        raise ValueError(f"paired_tests: differences must be finite, got {diffs.tolist()}")
    n = int(diffs.size)
    out = {"n": n, "mean": float(diffs.mean()) if n else math.nan, "sd": math.nan,
           "t": math.nan, "p_t": math.nan, "p_wilcoxon": math.nan}
    if n < 2:
        return out
    sd = float(diffs.std(ddof=1))
    out["sd"] = sd
    if not np.any(diffs):
        out.update(t=0.0, p_t=1.0, p_wilcoxon=1.0)
        return out
    if sd == 0.0:
        # scipy would warn on the 0/0 inside the statistic; the limit is clear.
        out.update(t=math.copysign(math.inf, out["mean"]), p_t=0.0)
    else:
        result = scipy_stats.ttest_1samp(diffs, 0.0)
        out.update(t=float(result.statistic), p_t=float(result.pvalue))
    out["p_wilcoxon"] = float(scipy_stats.wilcoxon(diffs).pvalue)
    return out


def _check_power_args(sd: float, effect: float, alpha: float, sd_name: str = "sd"):
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"{sd_name} must be finite and >= 0, got {sd}")
    if not math.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def power(sd: float, effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n pairs.

    The t statistic of n differences with mean `effect` and standard deviation `sd`
    follows a noncentral t with n - 1 degrees of freedom and noncentrality
    effect * sqrt(n) / sd; power is its mass beyond the critical values +-t_crit.

    Args:
        sd: standard deviation of the paired differences (e.g. over seeds).
        effect: true mean difference to detect (same units as sd).
        n: number of pairs (seeds), >= 2.
        alpha: two-sided significance level.

    Returns:
        The probability of rejecting the null (mean 0) at level alpha; alpha itself
        when effect == 0, and 1.0 when sd == 0 and effect != 0.
    """
    _check_power_args(sd, effect, alpha)
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs, got n={n}")
    return _paired_t_power(sd, effect, n, alpha)


def _paired_t_power(sd: float, effect: float, n: int, alpha: float) -> float:
    if effect == 0:
        return float(alpha)
    if sd == 0:
        return 1.0
    df = n - 1
    noncentrality = abs(effect) * math.sqrt(n) / sd
    t_crit = scipy_stats.t.ppf(1 - alpha / 2, df)
    # The far tail P(T < -t_crit) is taken as sf at -noncentrality (the same by
    # symmetry): nct.cdf returns NaN there once noncentrality is large (~27 at df 3000).
    return float(scipy_stats.nct.sf(t_crit, df, noncentrality)
                 + scipy_stats.nct.sf(t_crit, df, -noncentrality))


def seeds_needed(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8,
                 max_n: int = 100000) -> int:
    """Smallest number of pairs (>= 2) whose paired t-test has at least `power`.

    Args:
        sd: standard deviation of the paired differences.
        effect: mean difference to detect, non-zero.
        alpha: two-sided significance level.
        power: target power in (0, 1).
        max_n: the largest answer searched.

    Returns:
        The number of seeds; 2 when sd == 0 (any pair of runs shows the effect).

    Raises:
        ValueError: if effect == 0 (no number of seeds detects it), on bad sd, alpha
            or power, or if more than max_n seeds would be needed.
    """
    _check_power_args(sd, effect, alpha)
    target = power  # `power` the function is shadowed here by the argument
    if not 0 < target < 1:
        raise ValueError(f"power must be in (0, 1), got {target}")
    if max_n < 2:
        raise ValueError(f"max_n must be >= 2, got {max_n}")
    if effect == 0:
        raise ValueError("seeds_needed: effect is 0, no number of seeds can detect it")
    if sd == 0:
        return 2
    if _paired_t_power(sd, effect, max_n, alpha) < target:
        raise ValueError(f"seeds_needed: more than max_n={max_n} seeds are needed for "
                         f"effect={effect:g} with sd={sd:g}")
    # Power grows with n, so bisect for the first n that reaches the target.
    low, high = 1, max_n  # power(low) < target (by convention), power(high) >= target
    while high - low > 1:
        mid = (low + high) // 2
        if mid >= 2 and _paired_t_power(sd, effect, mid, alpha) >= target:
            high = mid
        else:
            low = mid
    return high


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their mean rank."""
    return scipy_stats.rankdata(values, method="average", axis=-1)


def _structural_components(labels: np.ndarray, scores: np.ndarray):
    """AUCs [k] and DeLong's structural components V10 [k, m] and V01 [k, n].

    V10[i] is the fraction of negatives that positive i outranks (ties 1/2), V01[j]
    the fraction of positives that outrank negative j; AUC is the mean of either.
    Midranks give both in O(n log n) (Sun & Xu 2014): the rank of a positive among
    all rows minus its rank among the positives counts the negatives below it.
    """
    positive = labels == 1
    pos_scores, neg_scores = scores[:, positive], scores[:, ~positive]
    m, n = pos_scores.shape[1], neg_scores.shape[1]
    rank_all = _midranks(np.concatenate([pos_scores, neg_scores], axis=1))
    rank_pos, rank_neg = _midranks(pos_scores), _midranks(neg_scores)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    return aucs, v10, v01


def delong_covariance(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance for k scorings of the same rows.

    Args:
        labels: 0/1 array [rows].
        scores: [k, rows] array, one row of scores per model.

    Returns:
        (aucs [k], covariance [k, k]) = S10 / m + S01 / n with m positives and n
        negatives, S10 and S01 the sample covariances (ddof=1) of the structural
        components.
    """
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    for scoring in scores:
        metrics._as_arrays(labels, scoring, None)  # shapes and 0/1 labels
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    m = int(labels.sum())
    n = labels.size - m
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs at least 2 positives and 2 negatives, got "
                         f"{m} positives and {n} negatives")
    aucs, v10, v01 = _structural_components(labels, scores)
    covariance = (np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n)
    return aucs, covariance


def delong_test(labels, scores_a, scores_b) -> dict:
    """DeLong's test of AUC(a) == AUC(b) for two models scored on the same rows.

    Args:
        labels: 0/1 array [rows].
        scores_a: scores (logits or probabilities) of model a [rows].
        scores_b: scores of model b on the same rows [rows].

    Returns:
        {'auc_a', 'auc_b', 'difference' (auc_a - auc_b), 'se' (of the difference),
        'z', 'p'} with p two-sided from the standard normal. When se == 0 (e.g.
        identical rankings) z = 0 and p = 1.0 if the difference is 0.

    Raises:
        ValueError: on mismatched shapes, labels not 0/1, NaN scores, or fewer than 2
            positives or negatives.
    """
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for s in (scores_a, scores_b)]
    if scores[0].shape != scores[1].shape:
        raise ValueError(f"scores_a {scores[0].shape} and scores_b {scores[1].shape} differ "
                         "in shape")
    aucs, covariance = delong_covariance(labels, np.stack(scores))
    difference = float(aucs[0] - aucs[1])
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    se = math.sqrt(max(float(variance), 0.0))  # rounding can leave -1e-18
    if se == 0.0:
        z = 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
    else:
        z = difference / se
    p = float(2 * scipy_stats.norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": difference,
            "se": se, "z": z, "p": p}


def rows_needed(se: float, rows: int, effect: float, alpha: float = 0.05,
                power: float = 0.8) -> int:
    """Test rows for DeLong's test to detect an AUC difference of `effect`.

    DeLong's standard error of the difference shrinks as 1 / sqrt(rows), so at N rows
    it is se * sqrt(rows / N); the answer is the smallest N at which the two-sided
    z-test has at least `power`.

    Args:
        se: standard error of the AUC difference measured on `rows` test rows.
        rows: the number of rows se was measured on.
        effect: absolute AUC difference to detect (e.g. 0.001), non-zero.
        alpha: two-sided significance level.
        power: target power in (0, 1).

    Returns:
        The number of rows; 1 when se == 0.

    Raises:
        ValueError: if effect == 0, or on bad se, rows, alpha or power.
    """
    _check_power_args(se, effect, alpha, sd_name="se")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if effect == 0:
        raise ValueError("rows_needed: effect is 0, no number of rows can detect it")
    if se == 0:
        return 1
    z_alpha = scipy_stats.norm.isf(alpha / 2)

    def power_at(n_rows: int) -> float:
        shift = abs(effect) / (se * math.sqrt(rows / n_rows))
        return scipy_stats.norm.cdf(shift - z_alpha) + scipy_stats.norm.cdf(-shift - z_alpha)

    # The one-tail formula is an upper bound (the far tail only adds power); bisect
    # below it for the exact minimum.
    high = max(1, math.ceil(rows * (se * (z_alpha + scipy_stats.norm.ppf(power)) / effect) ** 2))
    while power_at(high) < power:  # guards the ceil against rounding
        high += 1
    low = 0
    while high - low > 1:
        mid = (low + high) // 2
        if power_at(mid) >= power:
            high = mid
        else:
            low = mid
    return high


def _check_alpha_power(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")


def z_power(effect: float, se: float, alpha: float = 0.05) -> float:
    """Power of the two-sided z-test (e.g. DeLong's) of a true difference `effect` with
    standard error se > 0, both tails counted."""
    z_alpha = scipy_stats.norm.isf(alpha / 2)
    shift = effect / se
    return float(scipy_stats.norm.cdf(shift - z_alpha) + scipy_stats.norm.cdf(-shift - z_alpha))


def mde_normal(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference of a two-sided z-test (e.g. DeLong's) with this se.

    The smallest |true difference| whose test at level alpha rejects with probability
    `power` (both tails counted); about (z_{1-alpha/2} + z_power) * se. 0 when se == 0.

    Raises:
        ValueError: on a negative or non-finite se, or alpha / power outside (0, 1).
    """
    _check_power_args(se, 0.0, alpha, sd_name="se")
    _check_alpha_power(alpha, power)
    if se == 0:
        return 0.0
    if power <= alpha:  # a zero difference already rejects with probability alpha
        return 0.0
    high = se * (scipy_stats.norm.isf(alpha / 2) + scipy_stats.norm.ppf(power))
    return float(optimize.brentq(lambda e: z_power(e, se, alpha) - power, 0.0, high,
                                 xtol=1e-15 * max(1.0, high), rtol=1e-12))


def mde_paired_t(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean difference of a two-sided paired t-test over n pairs.

    The smallest |true mean difference| at which the test (n - 1 degrees of freedom,
    noncentral t, `power(sd, effect, n)`) rejects at level alpha with probability
    `power`. 0 when sd == 0.

    Raises:
        ValueError: n < 2, a negative or non-finite sd, alpha / power outside (0, 1).
    """
    _check_power_args(sd, 0.0, alpha)
    _check_alpha_power(alpha, power)
    if n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 pairs, got n={n}")
    if sd == 0 or power <= alpha:
        return 0.0
    high = sd
    while _paired_t_power(sd, high, n, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda e: _paired_t_power(sd, e, n, alpha) - power,
                                 0.0, high, xtol=1e-15 * max(1.0, high), rtol=1e-12))


def equivalence_margin_paired(differences, alpha: float = 0.05) -> dict:
    """TOST over paired differences: the smallest margin X with mean within +-X at 1 - alpha.

    Both one-sided t-tests (H0: mean <= -X, H0: mean >= +X) reject at level alpha for
    every margin above X = |mean| + t_{1-alpha, n-1} * sd / sqrt(n).

    Returns:
        {'margin', 'ci_low', 'ci_high'} (the 1 - 2 alpha confidence interval of the mean).

    Raises:
        ValueError: fewer than 2 differences, or a non-finite one.
    """
    diffs = np.asarray(differences, dtype=np.float64).reshape(-1)
    if diffs.size < 2 or not np.all(np.isfinite(diffs)):
        raise ValueError(f"equivalence_margin_paired needs >= 2 finite differences, got "
                         f"{diffs.tolist()}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    half = (scipy_stats.t.ppf(1 - alpha, diffs.size - 1) * diffs.std(ddof=1)
            / math.sqrt(diffs.size))
    mean = float(diffs.mean())
    return {"margin": abs(mean) + float(half), "ci_low": mean - float(half),
            "ci_high": mean + float(half)}


def equivalence_margin_normal(difference: float, se: float, alpha: float = 0.05) -> dict:
    """TOST of one normally distributed difference (e.g. DeLong's AUC difference).

    X = |difference| + z_{1-alpha} * se: both one-sided z-tests reject above it.

    Returns:
        {'margin', 'ci_low', 'ci_high'} (the 1 - 2 alpha confidence interval).
    """
    _check_power_args(se, difference, alpha, sd_name="se")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    half = float(scipy_stats.norm.isf(alpha) * se)
    return {"margin": abs(float(difference)) + half, "ci_low": difference - half,
            "ci_high": difference + half}
