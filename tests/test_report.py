"""The statistics of the experiment reports (mlctr/report.py) against known results."""
import math

import numpy as np
import pytest

from mlctr import report

# Student's sleep data (Cushny & Peebles; R's `sleep`): extra hours of sleep with two
# drugs on the same 10 patients. R: t.test(extra ~ group, data = sleep, paired = TRUE)
# gives t = -4.0621, df = 9, p-value = 0.002833.
DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_test_matches_r_on_the_sleep_data():
    test = report.paired_t_test(DRUG_1, DRUG_2)
    assert test["df"] == 9
    assert test["t"] == pytest.approx(-4.0621, abs=5e-5)
    assert test["p"] == pytest.approx(0.002833, abs=5e-7)


@pytest.mark.parametrize("t,df,p", [(2.0, 5, 0.101939), (1.0, 1, 0.5), (0.0, 7, 1.0),
                                    (2.228139, 10, 0.05), (12.706205, 1, 0.05)])
def test_student_t_tail_probabilities(t, df, p):
    assert report.student_t_two_sided_p(t, df) == pytest.approx(p, abs=2e-6)


def test_degenerate_pairs():
    assert math.isnan(report.paired_t_test([0.7], [0.6])["p"])            # one seed: no test
    assert math.isnan(report.paired_t_test([0.7, 0.8], [0.7, 0.8])["p"])  # identical arms
    same_gain = report.paired_t_test([0.71, 0.81], [0.70, 0.80])
    assert same_gain["p"] == 0.0 and same_gain["t"] == math.inf


def test_summary_verdicts_and_relative_gain():
    s = report.summarise_pairs("auc", DRUG_2, DRUG_1)
    assert s["verdict"].startswith("significant") and s["test_p"] < 0.05
    noisy = report.summarise_pairs("auc", [0.80, 0.79, 0.81], [0.80, 0.80, 0.80])
    assert noisy["verdict"].startswith("not significant")
    assert report.relative_improvement("auc", 0.8, 0.81) == pytest.approx(1.25)
    assert report.relative_improvement("logloss", 0.44, 0.43) == pytest.approx(100 / 44)
    assert report.mean_std([1.0, 2.0, 3.0], digits=2) == "2.00 ± 1.00"
    table = report.markdown_table([{"a": 1.0, "b": "x"}], [("a", "A"), ("b", "B")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| 1.00000 | x |"]


def test_figures_are_written(tmp_path):
    report.plot_gain([1, 2, 3], [[0.0], [0.1, 0.2], [0.05, 0.1]], str(tmp_path / "g.png"),
                     xlabel="N", title="t")
    report.plot_learning_curves({"deepfm": {"control": ([1, 2], [0.7, 0.71]),
                                            "mutual": ([1, 2], [0.7, 0.72])}},
                                str(tmp_path / "c.png"), "curves")
    assert (tmp_path / "g.png").stat().st_size > 1000 and (tmp_path / "c.png").stat().st_size > 1000
