"""The experiment runners (python -m experiments.<claim>) and their run cache.

Smoke tests of the runners (a few steps, one seed: the numbers mean nothing), and
the cache's contract: a finished run is reused, an unfinished one resumed (never
deleted), a finished run of another config refused.
"""
import json
import os
import subprocess
import sys

import pytest

from experiments import paper

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
