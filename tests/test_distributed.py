"""A real two-process jax.distributed run on localhost (CPU collectives over gloo).

`bash launch.sh multiprocess 2` starts two processes with one CPU device each: the mesh
is data = 2 across them, each reads only its half of every batch, and evaluation
gathers every example's prediction once. The run must match the single-process run of
the same config, and its checkpoints must restore in a single process.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from mlctr.run import checkpoint
from mlctr.run import train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def assert_metrics_close(got, want):
    for split in ("valid", "test"):
        assert set(got[split]) == set(want[split]) == {"deepfm", "dcn", "ensemble"}
        for peer, metrics in want[split].items():
            for name, value in metrics.items():
                np.testing.assert_allclose(got[split][peer][name], value, rtol=2e-4,
                                           err_msg=f"{split} {peer} {name}")


def test_two_process_run_matches_single_process(resumable, reference_run, tmp_path):
    workdir = str(tmp_path / "run")
    env = {**os.environ, "MLCTR_NO_VENV": "1", "PYTHON": sys.executable,
           "MLCTR_PORT": str(free_port())}
    proc = subprocess.run(["bash", "launch.sh", "multiprocess", "2", *resumable.flags(workdir)],
                          cwd=resumable.REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    assert "mesh {'data': 2, 'peer': 1, 'table': 1} over 2 process(es)" in proc.stderr, proc.stderr[-3000:]

    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(reference_run, "results.json")) as f:
        reference = json.load(f)
    assert results["steps"] == reference["steps"] == 60
    assert results["schedule"]["best_step"] == reference["schedule"]["best_step"]
    assert_metrics_close(results, reference)
    two, one = checkpoint.load_peer_weights(workdir), checkpoint.load_peer_weights(reference_run)
    for name in ("deepfm", "dcn"):
        for got, want in zip(jax.tree_util.tree_leaves(two[name]),
                             jax.tree_util.tree_leaves(one[name])):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-5)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:  # process 0 writes, once
        assert [json.loads(line)["step"] for line in f] == [10, 20, 20, 30, 40, 40, 50, 60, 60]

    # The final checkpoint, written by two processes, restores in this single process.
    again = train.train_and_evaluate(resumable.config(), workdir)
    assert again["resumed_from"] == 60
    assert_metrics_close(again, results)
