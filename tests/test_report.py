"""The one table writer (mlctr/report.py) and the experiments' statistics lines and figures."""
import math

import numpy as np
import pytest

from experiments import analysis
from mlctr import report
from mlctr import study

# Student's sleep data (Cushny & Peebles; R's `sleep`): extra hours of sleep with two
# drugs on the same 10 patients. R: t.test(extra ~ group, data = sleep, paired = TRUE)
# gives t = -4.0621, df = 9, p-value = 0.002833.
DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_markdown_table_and_relative_gain():
    assert report.relative_improvement("auc", 0.8, 0.81) == pytest.approx(1.25)
    assert report.relative_improvement("logloss", 0.44, 0.43) == pytest.approx(100 / 44)
    with pytest.raises(ValueError, match="unknown metric"):
        report.relative_improvement("acc", 0.5, 0.6)
    assert report.mean_std([1.0, 2.0, 3.0], digits=2) == "2.00 ± 1.00"
    table = report.markdown_table([{"a": 1.0, "b": "x"}, {"a": 2.5}], [("a", "A"), ("b", "B")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| 1.00000 | x |", "| 2.50000 | - |"]


def test_bayes_note_only_on_synthetic_results():
    synthetic = {"bayes": {"test": {"auc": 0.8, "logloss": 0.4}}}
    assert "Bayes-optimal on this synthetic test split" in report.bayes_note(synthetic)
    assert "AUC 0.80000, logloss 0.40000" in report.bayes_note(synthetic)
    assert report.bayes_note({"bayes": None}) == report.bayes_note({}) == report.bayes_note(None) == ""


def test_run_table_lists_each_peer_and_the_best_steps():
    results = {"peers": ["deepfm", "dcn"], "steps": 30, "schedule": {"best_step": [20, 30]},
               "valid": {n: {"auc": 0.7, "logloss": 0.5} for n in ("deepfm", "dcn", "ensemble")},
               "test": {n: {"auc": 0.71, "logloss": 0.49} for n in ("deepfm", "dcn", "ensemble")}}
    table = report.run_table(results)
    assert table.splitlines()[0] == ("| peer | valid AUC | valid logloss | test AUC "
                                     "| test logloss |")
    assert "| ensemble | 0.70000 | 0.50000 | 0.71000 | 0.49000 |" in table
    assert "30 steps; best step per peer: deepfm 20, dcn 30" in table


def test_compare_runs_both_paired_tests_and_the_power_line():
    # Gains of DRUG_2 over DRUG_1 in % of DRUG_1 are not the raw differences; use
    # arms whose relative gains are exactly the sleep differences (control 100).
    control = [100.0] * 10
    treated = [100.0 + b - a for a, b in zip(DRUG_1, DRUG_2)]
    s = analysis.compare("auc", treated, control, effect_pct=1.58)
    assert s["p_t"] == pytest.approx(0.002833, abs=5e-6)  # R's paired t-test
    assert 0 < s["p_wilcoxon"] < 0.05
    assert s["verdict"].startswith("significant")
    sd = float(np.std(np.subtract(DRUG_2, DRUG_1), ddof=1))
    assert s["sd"] == pytest.approx(sd)
    # The mean difference itself (1.58) is detected with these 10 pairs at power > 0.8.
    assert s["seeds_needed"] <= 10 and s["power"] > 0.8
    line = analysis.tests_line("sleep", s)
    assert "paired t-test p = 0.00283" in line and "Wilcoxon p = " in line
    assert f"needs {s['seeds_needed']} seeds" in line


def test_compare_with_one_seed_has_no_test():
    s = analysis.compare("auc", [0.71], [0.70], effect_pct=0.37)
    assert math.isnan(s["p_t"]) and s["seeds_needed"] is None
    assert s["verdict"].startswith("no test")
    assert "no seed-to-seed spread" in analysis.tests_line("one seed", s)


def test_paper_effect_per_dataset():
    assert study.paper_effect("shared_avazu") == (0.66, "Avazu")
    assert study.paper_effect("criteo") == (0.37, "Criteo")
    assert study.paper_effect("synthetic") == (0.37, "Criteo")


def test_delong_lines_count_significant_runs():
    rng = np.random.default_rng(0)
    labels = (rng.random(4000) < 0.3).astype(np.float64)
    good = labels + rng.normal(0, 1.0, 4000)
    bad = labels + rng.normal(0, 3.0, 4000)
    per_run = [study.delong({"m": good}, {"m": bad}, labels, ["m"], effect_pct=0.37)]
    assert per_run[0]["m"]["p"] < 1e-6 and per_run[0]["m"]["rows"] == 4000
    assert per_run[0]["m"]["rows_needed"] >= 1
    (line,) = analysis.delong_lines(per_run, "good vs bad")
    assert "p < 0.05 in 1 of 1 runs" in line and "4,000 test rows" in line


def test_figures_are_written(tmp_path):
    analysis.plot_gain([1, 2, 3], [[0.0], [0.1, 0.2], [0.05, 0.1]], str(tmp_path / "g.png"),
                       xlabel="N", title="t")
    analysis.plot_learning_curves({"deepfm": {"control": ([1, 2], [0.7, 0.71]),
                                              "mutual": ([1, 2], [0.7, 0.72])}},
                                  str(tmp_path / "c.png"), "curves")
    assert (tmp_path / "g.png").stat().st_size > 1000 and (tmp_path / "c.png").stat().st_size > 1000
