"""The peer-set diversity study's bookkeeping (experiments/peer_diversity.py), tiny shapes.

No training: the peer-set parsing and its faults, the per-set statistics of known
predictions, the slope fit of exact points, the summary over fake seeds and the figure.
"""
import numpy as np
import pytest

from experiments import peer_diversity as pd
from experiments.configs import diversity_peers


@pytest.fixture(scope="module")
def models():
    return diversity_peers.get_config().models


def test_config_copies_are_exact_and_regime_is_checked(models):
    for copy, source in diversity_peers.COPIES.items():
        assert models[copy].to_dict() == models[source].to_dict()
    shared = diversity_peers.get_config("shared_criteo")
    assert shared.train.batch_size == 128 and "dcn_b" in shared.models
    with pytest.raises(ValueError, match="diversity_peers.py: unknown regime 'avazu'"):
        diversity_peers.get_config("avazu")


def test_default_sets_parse_with_target_first(models):
    sets = pd.parse_peer_sets(pd.DEFAULT_SETS, models)
    assert list(sets) == ["same", "mix", "arch"]
    assert sets["arch"] == ["deepfm", "dcn", "ipnn", "fibinet"]
    assert pd.all_peers(sets) == ["deepfm", "deepfm_b", "deepfm_c", "deepfm_d", "dcn", "dcn_b",
                                  "ipnn", "fibinet"]


@pytest.mark.parametrize("spec, message", [
    ("same deepfm+dcn", "is not name=peer"),
    ("a=deepfm+dcn;a=deepfm+ipnn", "given twice"),
    ("a=deepfm", "needs >= 2 distinct peers"),
    ("a=deepfm+deepfm", "needs >= 2 distinct peers"),
    ("a=deepfm*2", "needs >= 2 distinct peers"),
    ("a=deepfm+nosuch", "'nosuch' has no hyperparameter set"),
    ("a=deepfm+dcn;b=dcn+deepfm", "same target peer"),
    (" ; ", "no peer set"),
])
def test_bad_peer_sets_are_one_line(models, spec, message):
    with pytest.raises(ValueError, match=message) as e:
        pd.parse_peer_sets(spec, models)
    assert str(e.value).startswith("--peer_sets") and "\n" not in str(e.value)


def test_set_statistics_of_known_predictions():
    labels = np.array([0, 0, 1, 1, 0, 1], np.float64)
    good = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    probs = {"a": good, "b": good.copy(), "c": 1.0 - good}
    same = pd.set_statistics(probs, labels, ["a", "b"])
    assert same["mean_abs_diff"] == pytest.approx(0.0)
    assert same["logit_corr"] == pytest.approx(1.0)
    assert same["ensemble_gain_pct"] == pytest.approx(0.0)
    assert same["companion_auc"] == pytest.approx(1.0)
    opposite = pd.set_statistics(probs, labels, ["a", "c"])
    assert opposite["mean_abs_diff"] == pytest.approx(np.abs(2 * good - 1).mean())
    assert opposite["logit_corr"] == pytest.approx(-1.0)
    assert opposite["companion_auc"] == pytest.approx(0.0)


def test_slope_fit_recovers_an_exact_line_and_refuses_too_few_points():
    fit = pd.slope_fit([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(1.0)
    assert fit["ci"][0] == pytest.approx(2.0) and fit["ci"][1] == pytest.approx(2.0)
    noisy = pd.slope_fit([0.0, 1.0, 2.0, 3.0], [0.0, 1.5, 1.5, 3.5])
    assert noisy["ci"][0] < noisy["slope"] < noisy["ci"][1]
    assert np.isnan(pd.slope_fit([0.0, 1.0], [0.0, 1.0])["slope"])
    assert np.isnan(pd.slope_fit([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["slope"])


def _cell(seed, sets, gain):
    """A fake seed: control AUC 0.7 for every peer, the target's mutual AUC up by `gain`."""
    per_set = {}
    for k, (name, keys) in enumerate(sets.items()):
        up = 0.7 * (1 + gain * (k + 1) / 100)
        per_set[name] = {"mean_abs_diff": 0.01 * (k + 1) + 0.001 * seed, "logit_corr": 0.9,
                         "companion_auc": 0.7, "ensemble_gain_pct": 0.1,
                         "mutual": {p: {"auc": up if p == keys[0] else 0.7} for p in keys},
                         "delong": {keys[0]: {"p": 0.5, "se": 1e-3, "rows": 100,
                                              "mde_pct": 0.4, "equivalence_pct": 0.3}}}
    return {"seed": seed, "bayes": None, "per_set": per_set,
            "control": {p: {"auc": 0.7} for p in pd.all_peers(sets)}}


def test_summarise_and_plot(models, tmp_path):
    sets = pd.parse_peer_sets("lo=deepfm+deepfm_b;hi=deepfm+dcn", models)
    cells = [_cell(s, sets, gain) for s, gain in enumerate((0.1, 0.2, 0.3))]
    rows, lines, fit = pd.summarise(cells, sets, effect_pct=0.37)
    assert [r["set"] for r in rows] == ["lo", "hi"]
    assert rows[0]["target_gain"] == "+0.200" and rows[1]["target_gain"] == "+0.400"
    assert rows[0]["mean_gain"] == "+0.100"
    assert np.allclose(rows[1]["target"]["gains_pct"], [0.2, 0.4, 0.6])
    assert fit["n"] == 6 and fit["slope"] > 0
    assert any("deepfm mutual with set hi vs with set lo" in line for line in lines)
    assert any(line.startswith("- Slope of deepfm's gain") for line in lines)
    path = tmp_path / "gain.png"
    pd.plot(rows, fit, str(path), "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
