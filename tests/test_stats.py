"""mlctr/stats.py against closed forms, brute force, simulation and pROC's published values."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mlctr import metrics, stats

# pROC's aSAH data (Turck et al. 2010, 113 patients): outcome (1 = Poor), WFNS grade,
# S100B and NDKA, in the package's row order.
ASAH_POOR = ("00001101001011001011101000000000100110110000000001100010001010011101101111"
             "000110100000010000000000001111110001000")
ASAH_WFNS = ("11113254125255125225211112121134214541425511241125521251222151125214524414"
             "121421232421451154221113125225552445111")
ASAH_S100B = """
    0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04
    0.07 0.33 0.09 0.09 0.07 0.11 0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34
    0.35 0.48 0.09 0.96 0.25 0.5 0.46 0.16 0.07 0.43 0.45 0.11 0.08 0.09 0.86 0.52 0.08
    0.06 0.13 2.07 0.1 0.14 0.15 0.07 0.06 0.77 0.05 0.09 0.3 0.03 0.09 0.04 0.23 0.7 0.09
    0.27 0.71 0.08 0.26 0.08 0.16 0.09 0.13 0.1 0.08 0.11 0.33 0.11 0.28 0.07 0.1 0.32 0.22
    0.07 0.05 0.24 0.38 0.1 0.15 0.08 0.14 0.1 0.07 0.04 0.19 0.56 0.14 0.58 0.32 0.82 0.74
    0.15 0.47 0.17 0.44 0.15 0.5 0.48"""
ASAH_NDKA = """
    3.01 8.54 8.09 10.42 17.4 12.75 6.0 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75
    11.6 16.11 32.37 54.82 32.41 49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81
    9.85 18.21 5.03 14.04 21.93 8.02 7.42 8.38 6.59 9.63 13.12 7.96 14.34 41.43 7.63 7.06
    12.59 13.56 3.87 9.44 7.66 12.98 419.19 27.19 22.27 9.95 21.22 11.73 10.4 58.83 6.39
    11.09 12.22 13.67 17.21 22.63 12.9 9.7 21.57 8.23 72.57 15.54 10.51 10.6 14.57 5.19
    9.63 4.61 21.48 17.3 12.71 9.44 11.07 19.46 10.83 5.37 11.97 7.75 9.83 10.55 28.49
    8.53 12.57 12.9 46.83 11.68 12.67 9.01 9.57 34.06 11.72 14.26 47.61 11.67 24.58 10.33
    13.87 15.89 22.43 6.79 13.45"""


def _asah():
    labels = np.array([int(c) for c in ASAH_POOR])
    markers = {"wfns": np.array([float(c) for c in ASAH_WFNS]),
               "s100b": np.array(ASAH_S100B.split(), dtype=float),
               "ndka": np.array(ASAH_NDKA.split(), dtype=float)}
    assert labels.size == 113 and all(v.size == 113 for v in markers.values())
    return labels, markers


def _z_power(sd, effect, n, alpha=0.05):
    """Power of the two-sided z-test with known sd (the t-test's large-n limit)."""
    shift = effect * math.sqrt(n) / sd
    z = scipy_stats.norm.isf(alpha / 2)
    return scipy_stats.norm.cdf(shift - z) + scipy_stats.norm.cdf(-shift - z)


# --- paired tests over seeds -------------------------------------------------------


def test_paired_tests_closed_form():
    result = stats.paired_tests([1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["n"] == 5 and result["mean"] == 3.0
    assert result["sd"] == pytest.approx(math.sqrt(2.5))
    assert result["t"] == pytest.approx(3.0 / (math.sqrt(2.5) / math.sqrt(5)))
    # For df = 4 the t cdf has a closed form: 1/2 + 3/8 u (1 - u^2 / 12), u = t / sqrt(1 + t^2/4)
    # written out for u's two factors.
    t = result["t"]
    scale = 1 + t * t / 4
    cdf = 0.5 + 3 / 8 * t / math.sqrt(scale) * (1 - t * t / (12 * scale))
    assert result["p_t"] == pytest.approx(2 * (1 - cdf))
    # Exact signed-rank null: all 5 differences positive has probability 2^-5 per tail.
    assert result["p_wilcoxon"] == pytest.approx(2 / 32)


def test_paired_tests_degenerate_inputs_give_clean_values_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = stats.paired_tests([0.3])
        zeros = stats.paired_tests([0.0, 0.0, 0.0])
        constant = stats.paired_tests([-0.2, -0.2, -0.2, -0.2])
        empty = stats.paired_tests([])
    assert one["n"] == 1 and one["mean"] == 0.3
    assert all(math.isnan(one[k]) for k in ("sd", "t", "p_t", "p_wilcoxon"))
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["p_t"])
    assert zeros["t"] == 0.0 and zeros["p_t"] == 1.0 and zeros["p_wilcoxon"] == 1.0
    assert constant["t"] == -math.inf and constant["p_t"] == 0.0
    assert constant["p_wilcoxon"] == pytest.approx(2 / 16)
    with pytest.raises(ValueError, match="finite"):
        stats.paired_tests([0.1, math.nan])


# --- power and seeds ---------------------------------------------------------------


@pytest.mark.parametrize("sd,effect,n", [(1.0, 0.2, 400), (0.003, -0.0004, 600)])
def test_power_approaches_the_known_variance_z_test_at_large_n(sd, effect, n):
    assert stats.power(sd, effect, n) == pytest.approx(_z_power(sd, abs(effect), n), abs=2e-3)
    # ...and stays below it: not knowing sd costs power.
    assert stats.power(sd, effect, 10) < _z_power(sd, abs(effect), 10)


def test_power_matches_the_t_tests_rejection_rate_by_simulation():
    rng = np.random.default_rng(0)
    sd, effect, n, reps = 1.0, 1.0, 5, 20000
    samples = rng.normal(effect, sd, size=(reps, n))
    rejected = scipy_stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    expected = stats.power(sd, effect, n)
    assert 0.3 < expected < 0.7  # a regime where the z approximation is far off
    assert rejected.mean() == pytest.approx(expected, abs=4 * math.sqrt(0.25 / reps))


def test_power_edge_cases():
    assert stats.power(1.0, 0.0, 10) == 0.05  # the size of the test
    assert stats.power(0.0, 0.1, 2) == 1.0
    assert stats.power(1.0, 50.0, 3000) == 1.0  # large noncentrality stays finite
    with pytest.raises(ValueError, match="n >= 2"):
        stats.power(1.0, 0.5, 1)
    with pytest.raises(ValueError, match="sd"):
        stats.power(math.nan, 0.5, 10)


@pytest.mark.parametrize("sd,effect", [(1.0, 0.5), (1.0, 3.0), (0.004, 0.0037), (1.0, -0.05)])
def test_seeds_needed_is_the_smallest_n_with_enough_power(sd, effect):
    n = stats.seeds_needed(sd, effect)
    assert stats.power(sd, effect, n) >= 0.8
    assert n == 2 or stats.power(sd, effect, n - 1) < 0.8


def test_seeds_needed_textbook_value_and_edges():
    assert stats.seeds_needed(1.0, 0.5) == 34  # one-sample t, d = 0.5, two-sided
    assert stats.seeds_needed(0.0, 0.01) == 2
    with pytest.raises(ValueError, match="effect is 0"):
        stats.seeds_needed(1.0, 0.0)
    with pytest.raises(ValueError, match="max_n=100"):
        stats.seeds_needed(1.0, 0.01, max_n=100)


# --- DeLong --------------------------------------------------------------------------


def _brute_force_delong(labels, scores):
    """AUCs and covariance from the O(m n) pairwise structural components."""
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    m, n = pos.shape[1], neg.shape[1]
    psi = ((pos[:, :, None] > neg[:, None, :])
           + 0.5 * (pos[:, :, None] == neg[:, None, :]))  # [k, m, n]
    aucs = psi.mean(axis=(1, 2))
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    s10 = (v10 - aucs[:, None]) @ (v10 - aucs[:, None]).T / (m - 1)
    s01 = (v01 - aucs[:, None]) @ (v01 - aucs[:, None]).T / (n - 1)
    return aucs, s10 / m + s01 / n


def test_delong_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=70)
    # Coarse scores so that ties within and across classes are common.
    score_a = np.round(labels + rng.normal(0, 1, 70), 0)
    score_b = np.round(0.5 * score_a + rng.normal(0, 1, 70), 1)
    scores = np.stack([score_a, score_b, -score_a])
    aucs, covariance = stats.delong_covariance(labels, scores)
    want_aucs, want_covariance = _brute_force_delong(labels, scores)
    np.testing.assert_allclose(aucs, want_aucs, rtol=1e-12)
    np.testing.assert_allclose(covariance, want_covariance, rtol=1e-10, atol=1e-15)
    assert aucs[0] == pytest.approx(metrics.auc(labels, score_a))
    assert aucs[2] == pytest.approx(1 - aucs[0])

    result = stats.delong_test(labels, score_a, score_b)
    variance = want_covariance[0, 0] + want_covariance[1, 1] - 2 * want_covariance[0, 1]
    assert result["difference"] == pytest.approx(want_aucs[0] - want_aucs[1])
    assert result["se"] == pytest.approx(math.sqrt(variance))
    assert result["z"] == pytest.approx(result["difference"] / result["se"])


@pytest.mark.parametrize("a,b,z,p", [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054),
])
def test_delong_reproduces_proc_roc_test_on_asah(a, b, z, p):
    """pROC's roc.test(roc(outcome, a), roc(outcome, b)) values, from its test suite."""
    labels, markers = _asah()
    result = stats.delong_test(labels, markers[a], markers[b])
    assert result["z"] == pytest.approx(z, rel=1e-10)
    assert result["p"] == pytest.approx(p, rel=1e-10)
    swapped = stats.delong_test(labels, markers[b], markers[a])
    assert swapped["z"] == pytest.approx(-z, rel=1e-10)
    assert swapped["p"] == pytest.approx(result["p"], rel=1e-12)
    assert swapped["se"] == pytest.approx(result["se"], rel=1e-12)


def test_delong_aucs_and_variances_match_proc():
    labels, markers = _asah()
    aucs, covariance = stats.delong_covariance(
            labels, np.stack([markers["wfns"], markers["ndka"], markers["s100b"]]))
    np.testing.assert_allclose(aucs[:2], [0.823678861788618, 0.611957994579946], rtol=1e-12)
    np.testing.assert_allclose(np.diag(covariance),
                               [0.00146991470882363, 0.0031908105493913,
                                0.00266868245717244], rtol=1e-10)


def test_delong_identical_scores_and_bad_input():
    labels, markers = _asah()
    same = stats.delong_test(labels, markers["s100b"], markers["s100b"].copy())
    assert same["difference"] == 0.0 and same["se"] == 0.0
    assert same["z"] == 0.0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="2 positives and 2 negatives"):
        stats.delong_test([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="differ in shape"):
        stats.delong_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2])
    with pytest.raises(ValueError, match="0 or 1"):
        stats.delong_test([0, 2, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="NaN"):
        stats.delong_test([0, 1, 0, 1], [0.1, math.nan, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])


# --- rows for DeLong -----------------------------------------------------------------


@pytest.mark.parametrize("se,rows,effect", [(0.01, 10000, 0.005), (0.0418, 113, -0.05),
                                            (0.002, 5000, 0.03)])
def test_rows_needed_is_the_smallest_n_with_enough_power(se, rows, effect):
    needed = stats.rows_needed(se, rows, effect)

    def power_at(n_rows):
        return _z_power(se * math.sqrt(rows), abs(effect), n_rows)

    assert power_at(needed) >= 0.8
    assert needed == 1 or power_at(needed - 1) < 0.8
    # The textbook formula n = rows (se (z_a/2 + z_b) / effect)^2, up to rounding.
    z_sum = scipy_stats.norm.isf(0.025) + scipy_stats.norm.ppf(0.8)
    assert needed == pytest.approx(rows * (se * z_sum / effect) ** 2, abs=1.0)
    # The same answer whichever row count the se was measured at.
    assert stats.rows_needed(se / 2, rows * 4, effect) == needed


def test_rows_needed_edges():
    assert stats.rows_needed(0.0, 1000, 0.01) == 1
    with pytest.raises(ValueError, match="effect is 0"):
        stats.rows_needed(0.01, 1000, 0.0)
    with pytest.raises(ValueError, match="rows"):
        stats.rows_needed(0.01, 0, 0.01)
    with pytest.raises(ValueError, match="se must be finite"):
        stats.rows_needed(math.nan, 1000, 0.01)


@pytest.mark.parametrize("sd,n", [(0.1, 3), (1.0, 10), (0.05, 40)])
def test_mde_paired_t_has_exactly_the_target_power(sd, n):
    mde = stats.mde_paired_t(sd, n)
    # Reference: the noncentral t's two tails written out with scipy (not stats.power).
    df, nc = n - 1, mde * math.sqrt(n) / sd
    t_crit = scipy_stats.t.ppf(0.975, df)
    reference = 1 - scipy_stats.nct.cdf(t_crit, df, nc) + scipy_stats.nct.cdf(-t_crit, df, nc)
    assert reference == pytest.approx(0.8, abs=1e-6)
    assert stats.mde_paired_t(sd, n, power=0.9) > mde
    assert stats.mde_paired_t(0.0, n) == 0.0
    with pytest.raises(ValueError, match="n >= 2"):
        stats.mde_paired_t(sd, 1)


def test_mde_paired_t_by_simulation():
    """At the MDE, the t-test rejects in ~80% of simulated experiments (numpy draws)."""
    rng = np.random.default_rng(0)
    sd, n = 0.2, 6
    mde = stats.mde_paired_t(sd, n)
    draws = rng.normal(mde, sd, size=(20000, n))
    t = draws.mean(1) / (draws.std(1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, n - 1))
    assert rejected == pytest.approx(0.8, abs=0.01)


def test_mde_normal_is_the_z_tests_detectable_difference():
    se = 0.0012
    mde = stats.mde_normal(se)
    z = scipy_stats.norm.isf(0.025)
    reference = scipy_stats.norm.cdf(mde / se - z) + scipy_stats.norm.cdf(-mde / se - z)
    assert reference == pytest.approx(0.8, abs=1e-9)
    assert mde == pytest.approx((z + scipy_stats.norm.ppf(0.8)) * se, rel=1e-4)  # far tail ~0
    assert stats.mde_normal(0.0) == 0.0
    with pytest.raises(ValueError):
        stats.mde_normal(-1.0)


def test_equivalence_margins_are_where_tost_sits_at_alpha():
    diffs = np.array([0.03, -0.01, 0.02, 0.0, 0.05, -0.02])
    out = stats.equivalence_margin_paired(diffs)
    x = out["margin"]
    p_lower = scipy_stats.ttest_1samp(diffs, -x, alternative="greater").pvalue
    p_upper = scipy_stats.ttest_1samp(diffs, x, alternative="less").pvalue
    assert max(p_lower, p_upper) == pytest.approx(0.05) and min(p_lower, p_upper) < 0.05
    assert out["ci_low"] < diffs.mean() < out["ci_high"] == pytest.approx(x)
    normal = stats.equivalence_margin_normal(-0.002, 0.001)
    p_lower = scipy_stats.norm.sf((-0.002 + normal["margin"]) / 0.001)
    p_upper = scipy_stats.norm.cdf((-0.002 - normal["margin"]) / 0.001)
    assert max(p_lower, p_upper) == pytest.approx(0.05)
    with pytest.raises(ValueError, match=">= 2"):
        stats.equivalence_margin_paired([0.1])
