"""Each experiment entry runs end to end on a tiny config and writes its outputs.

Smoke tests only (a few steps, one seed): the numbers mean nothing.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config=" + os.path.join(REPO, "mlctr/configs/tiny.py"),
    "--config.data.num_rows=2000",
    "--config.peers=deepfm,dcn",
    "--config.train.max_steps=6",
    "--config.finetune.max_steps=4",
    "--seeds=0",
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
def test_experiment_entry_writes_table_json_and_figure(entry, shared_root):
    figures, extra = ENTRIES[entry]
    workdir = shared_root / entry
    cmd = [sys.executable, os.path.join(REPO, "experiments", f"{entry}.py"), f"--workdir={workdir}",
           f"--pretrain_root={shared_root / 'pretrain'}", *TINY, *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (workdir / "table.md").read_text()
    assert table.count("|") > 10
    results = json.loads((workdir / "results.json").read_text())
    assert results["claim"] == entry and results["seeds"] == [0]
    for figure in figures:
        assert (workdir / figure).stat().st_size > 1000
    if entry == "precision":  # two trainings, not the float32 cache read twice
        seed0 = results["per_seed"][0]
        assert seed0["float32"] != seed0["bfloat16"]
