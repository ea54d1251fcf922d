"""The step benchmark runs and prints the JSON line docs/performance.md's tables come from.

A smoke test (one timed step per configuration, the numbers mean nothing): the benchmark is
a deliverable, and its last line is what the performance tables in docs/performance.md are read from.
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_embedding_prints_its_json_line():
    cmd = [sys.executable, "-m", "experiments.benchmarks.embedding",
           "--vocab_sizes=1000,1000000", "--peers=1", "--rounds=1", "--steps=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("dense_step_ms", "sparse_step_ms"):
        assert set(result[key]) == {"1000", "1000000"}
        assert all(ms["1"] > 0 for ms in result[key].values())
    assert result["sparse_10m_over_10k"] is None  # a 4-peer figure; only 1 peer ran
    assert result["sparse_10m_over_10k_1peer"] > 0  # largest / smallest vocabulary, 1 peer
    assert 0 < result["dnn_flop_efficiency"]["1"] < 2
    assert 0 < result["dnn_flop_efficiency_dense"]["1"] < 2
    assert result["matmul_gflops"] > 0 and result["batch_size"] == 4096
