"""The experiment runners (python -m experiments.<claim>) and their run cache.

Smoke tests of the runners (a few steps, one seed: the numbers mean nothing), and
the cache's contract: a finished run is reused, an unfinished one resumed (never
deleted), a finished run of another config refused.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import paper
from mlctr import mutual, study
from mlctr import peer_groups
from mlctr.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config=" + os.path.join(REPO, "mlctr/configs/tiny.py"),
    "--config.data.num_rows=2000",
    "--config.peers=deepfm,dcn",
    "--config.train.max_steps=6",
    "--config.finetune.max_steps=4",
]
ENTRIES = {
    "scratch": (["curves.png"], []),
    "finetune": (["curves.png"], []),
    "cotrain_size": (["gain_vs_n.png"], ["--order=deepfm,dcn,ipnn"]),
    "companions": (["gain_vs_companion_auc.png"], ["--fractions=0.5,1.0"]),
    "variants": (["gain_vs_alpha.png"], ["--alphas=0.5,1"]),
    "baselines": (["baselines.png"], []),
    "precision": (["precision.png"], []),
}


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    return tmp_path_factory.mktemp("paper")


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_experiment_runner_writes_table_json_and_figure(entry, shared_root):
    figures, extra = ENTRIES[entry]
    workdir = shared_root / entry
    seeds = "0,1" if entry == "finetune" else "0"  # two seeds: the paired tests run
    cmd = [sys.executable, "-m", f"experiments.{entry}", f"--workdir={workdir}",
           f"--pretrain_root={shared_root / 'pretrain'}", f"--seeds={seeds}", *TINY, *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (workdir / "table.md").read_text()
    assert table.count("|") > 10 and "Statistics (paired by seed" in table
    results = json.loads((workdir / "results.json").read_text())
    assert results["claim"] == entry and results["seeds"] == [int(s) for s in seeds.split(",")]
    for figure in figures:
        assert (workdir / figure).stat().st_size > 1000
    if entry == "finetune":  # tests over seeds, the power line and DeLong per run
        assert "Wilcoxon p = " in table and "needs" in table and "DeLong" in table
        delong = results["per_seed"][0]["delong"]["deepfm"]
        assert 0 <= delong["p"] <= 1 and delong["rows"] > 0
    if entry == "baselines":  # EKTF as a finetune arm and from scratch
        assert "EKTF finetune" in table and "EKTF from scratch: wide_deep*4" in table
        assert set(results["per_seed"][0]["ektf"]) == {"deepfm", "dcn", "ensemble"}
    if entry == "precision":  # two trainings, not the float32 cache read twice
        seed0 = results["per_seed"][0]
        assert seed0["float32"] != seed0["bfloat16"]


def _config(tiny_config, max_steps):
    config = tiny_config(max_steps=max_steps)
    with config.unlocked():
        config.checkpoint.ckpt_steps = 5
    return config


def test_run_cached_resumes_an_unfinished_run(tiny_config, tmp_path):
    run_dir = str(tmp_path / "run")
    first = paper.run_cached(_config(tiny_config, 10), run_dir)
    assert first["steps"] == 10
    # As if killed after the step-10 checkpoint of a 20-step run: no results.json yet.
    os.remove(os.path.join(run_dir, "results.json"))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        before = [json.loads(line) for line in f]
    resumed = paper.run_cached(_config(tiny_config, 20), run_dir)
    assert resumed["steps"] == 20 and resumed["resumed_from"] == 10
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        after = [json.loads(line) for line in f]
    assert after[:len(before)] == before  # the first half is kept, not retrained
    # Finished now: reused as is, without training.
    assert paper.run_cached(_config(tiny_config, 20), run_dir) == json.loads(
        open(os.path.join(run_dir, "results.json")).read())


def test_run_cached_refuses_a_finished_run_of_another_config(tiny_config, tmp_path):
    run_dir = str(tmp_path / "run")
    paper.run_cached(_config(tiny_config, 5), run_dir)
    other = _config(tiny_config, 5)
    with other.unlocked():
        other.mutual.alpha = 0.5
    with pytest.raises(ValueError, match=r"finished run of another config \(mutual.alpha"):
        paper.run_cached(other, run_dir)
    with pytest.raises(ValueError, match="train.max_steps"):
        paper.run_cached(_config(tiny_config, 7), run_dir)


def test_a_pretrained_run_is_shared_by_finetune_schedules(tiny_config, tmp_path):
    """A run from scratch never reads config.finetune, so its cache ignores it; a
    finetune run (init_from set) still refuses a changed finetune schedule."""
    run_dir = str(tmp_path / "run")
    first = paper.run_cached(_config(tiny_config, 5), run_dir)
    other = _config(tiny_config, 5)
    with other.unlocked():
        other.finetune.learning_rate = other.finetune.learning_rate / 3
    assert paper.run_cached(other, run_dir) == first
    finetune_dir = str(tmp_path / "finetune")
    paper.run_cached(study.finetune_config(_config(tiny_config, 5), run_dir, 1.0), finetune_dir)
    with pytest.raises(ValueError, match="finished run of another config"):
        paper.run_cached(study.finetune_config(other, run_dir, 1.0), finetune_dir)


def _ektf_reference(logits, labels):
    """EKTF's per-student loss terms written out student by student (numpy)."""
    p = 1 / (1 + np.exp(-logits))
    n = len(p)
    teacher = 1 / (1 + np.exp(-logits.mean(axis=0)))
    score = np.array([np.mean(1 - np.abs(labels - p[k])) for k in range(n)])
    softmin = np.exp(-score) / np.exp(-score).sum()
    out = []
    for s in range(n):
        term = n * softmin[s] * np.mean((p[s] - teacher) ** 2)
        others = [i for i in range(n) if i != s]
        w = np.exp([score[i] - score[s] for i in others])
        w /= w.sum()
        term += sum(wi * np.mean((p[s] - p[i]) ** 2) for wi, i in zip(w, others))
        out.append(term)
    return np.array(out)


def test_ektf_terms_match_the_reference_loss():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 32)).astype(np.float32)
    labels = (rng.random(32) < 0.4).astype(np.float32)
    got = mutual.ektf_terms(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(np.asarray(got), _ektf_reference(logits, labels), rtol=1e-5)
    assert float(mutual.ektf_terms(jnp.asarray(logits[:1]), jnp.asarray(labels))[0]) == 0.0


def test_ektf_moves_each_peer_by_its_own_term_only():
    """Teacher, companions and weights are constants: d term_n / d z_m = 0 for m != n."""
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
    labels = jnp.asarray((rng.random(16) < 0.5).astype(np.float32))
    jacobian = jax.jacobian(lambda z: mutual.ektf_terms(z, labels))(logits)  # [n, m, B]
    for n in range(3):
        for m in range(3):
            norm = float(jnp.abs(jacobian[n, m]).sum())
            assert (norm > 0) if n == m else (norm == 0), (n, m, norm)


def test_decide_gives_seeds_and_rows_for_the_observed_gain(tmp_path):
    """experiments.decide: seeds from the gains' sd, rows from DeLong's median se."""
    from experiments import analysis, decide
    from mlctr import stats
    treated, control = [0.7010, 0.7022, 0.7005], [0.7000, 0.7004, 0.7001]
    row = {"peer": "deepfm", "auc_stats": analysis.compare("auc", treated, control, 0.37)}
    tests = [{"auc_a": t, "auc_b": c, "se": se, "rows": 1000}
             for t, c, se in zip(treated, control, (0.0004, 0.0005, 0.0006))]
    results = {"rows": [row], "per_seed": [{"delong": {"deepfm": t}} for t in tests]}
    os.makedirs(tmp_path / "finetune")
    (tmp_path / "finetune" / "results.json").write_text(json.dumps(results))
    [out] = decide.decide([str(tmp_path)])
    gain, sd = row["auc_stats"]["gain_pct"], row["auc_stats"]["sd"]
    assert out["seeds"] == f"{stats.seeds_needed(sd, gain):,}"
    effect = gain / 100 * np.mean(control)
    assert out["rows"] == f"{stats.rows_needed(0.0005, 1000, effect):,}"
    assert out["arm"] == "deepfm" and out["gain"] == f"{gain:+.3f}"


def test_name_peers_gives_repeated_keys_copies_named_as_the_trainer_names_them():
    config = tiny.get_config("peers=deepfm*3+dcn")
    names = paper.name_peers(config, config.peers)
    assert names == ["deepfm_0", "deepfm_1", "deepfm_2", "dcn"]
    peers = peer_groups.build_peers(config.peers, config.models, vocab_size=50, num_fields=3)
    assert list(peers.names) == names  # the trainer's names for the stacked peers
    assert all(config.models[n].to_dict() == config.models["deepfm"].to_dict()
               for n in names[:3])
    assert paper.name_peers(config, "deepfm,dcn") == ["deepfm", "dcn"]
