"""The trainer and FuxiCTR benchmarks run and print the lines docs/performance.md reads.

benchmarks.train runs its whole path (prepare, bare step, trainer, JSON line) on a tiny
dataset with a tiny DNN: the numbers mean nothing, the keys and their consistency do.
benchmarks.vs_fuxictr's comparison arithmetic and its measurement of a worker process are
tested without FuxiCTR (its environment is optional and never needed by the tests).
"""
import json
import os
import subprocess
import sys

import pytest

from experiments.benchmarks import vs_fuxictr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_train_prints_trainer_over_step(tmp_path):
    cmd = [sys.executable, "-m", "experiments.benchmarks.train",
           "--rows=3000", "--peers=deepfm,dcn", "--dnn_hidden_units=16", "--batch_size=256",
           "--log_steps=3", "--bare_steps=2", f"--workdir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["peers"] == "deepfm,dcn" and result["rows"] == 3000
    assert result["trainer_over_step"] > 0
    assert result["trainer_over_step"] == pytest.approx(
        result["trainer_examples_per_sec"] / result["step_examples_per_sec"])
    # 80% of 3000 rows train: 9 full batches of 256 (the trainer drops the last partial one).
    assert result["steps"] == 9 and result["trained_examples"] == 9 * 256
    assert len(result["trainer_interval_examples_per_sec"]) == 3
    assert all(r > 0 for r in result["trainer_interval_examples_per_sec"])
    for key in ("step_examples_per_sec_before", "step_examples_per_sec_after",
                "trainer_over_step_cpu", "load_average_before", "jax", "cpu_count"):
        assert key in result


def _run(examples, seconds, auc, wall=10.0):
    return {"examples": examples, "train_seconds": seconds, "test_auc": auc,
            "test_logloss": 0.5, "wall_seconds": wall, "examples_per_sec": examples / seconds}


def test_training_comparison_ratios_and_auc_spread():
    mlctr = [_run(1000, 1.0, 0.760, wall=5.0), _run(1000, 3.0, 0.762, wall=7.0)]
    fuxictr = [_run(1000, 8.0, 0.755, wall=20.0), _run(1000, 12.0, 0.765, wall=28.0)]
    got = vs_fuxictr.training_comparison(mlctr, fuxictr)
    # Rates are total examples over total seconds: 2000 / 4 against 2000 / 20.
    assert got["train_ratio"] == pytest.approx(5.0)
    assert got["wall_ratio"] == pytest.approx(24.0 / 6.0)
    assert got["auc_gap"] == pytest.approx(0.761 - 0.760)
    assert got["fuxictr_auc_spread"] == pytest.approx(0.010)
    assert got["auc_gap_within_fuxictr_spread"] is True
    outside = vs_fuxictr.training_comparison([_run(1000, 1.0, 0.70)], fuxictr)
    assert outside["auc_gap_within_fuxictr_spread"] is False


def test_summary_divides_mlctr_by_fuxictr():
    prep = {"mlctr": dict(seconds=2.0, rows_per_sec=500.0, peak_bytes=2**28,
                          peak_rss_bytes=2**27, cpu_seconds=3.0),
            "fuxictr": dict(seconds=60.0, rows_per_sec=10.0, peak_bytes=2**33,
                            peak_rss_bytes=2**31, cpu_seconds=90.0)}
    line = vs_fuxictr.summary(prep, {"deepfm": {"train_ratio": 3.5}}, rows=100)
    assert line["prepare_ratio"] == pytest.approx(50.0)
    # Peaks: the larger measurement of each side (PSS 2^28 vs RSS 2^27; 2^33 vs 2^31).
    assert line["peak_memory_ratio"] == pytest.approx(2**-5)
    assert line["peak_rss_ratio"] == pytest.approx(2**-4)
    assert line["prepare"]["fuxictr"]["peak_gib"] == pytest.approx(8.0)
    rss_larger = dict(prep, mlctr=dict(prep["mlctr"], peak_rss_bytes=2**29))
    assert vs_fuxictr.summary(rss_larger, {})["peak_memory_ratio"] == pytest.approx(2**-4)
    # mlctr's single process is not sampled: its peak is its kernel-measured RSS.
    unsampled = dict(prep, mlctr=dict(prep["mlctr"], peak_bytes=None))
    assert vs_fuxictr.summary(unsampled, {})["peak_memory_ratio"] == pytest.approx(2**-6)
    assert vs_fuxictr.summary(unsampled, {})["prepare"]["mlctr"]["peak_pss_gib"] is None
    assert line["models"]["deepfm"]["train_ratio"] == 3.5 and line["rows"] == 100
    json.dumps(line)  # printable as the last line


def test_run_worker_measures_the_child_process(tmp_path):
    from mlctr.data import synthetic

    raw = str(tmp_path / "raw.txt")
    synthetic.generate(raw, num_rows=2000, seed=3)
    got = vs_fuxictr.run_worker(sys.executable, "mlctr_prepare",
                           {"raw": raw, "out": str(tmp_path / "prepared")}, str(tmp_path / "logs"),
                           sample_memory=True)
    assert got["seconds"] > 0 and got["cpu_seconds"] > 0
    # A Python process with numpy imported holds well over 10 MiB, sampled or not.
    assert got["peak_bytes"] > 10 * 2**20 and got["peak_rss_bytes"] > 10 * 2**20
    unsampled = vs_fuxictr.run_worker(sys.executable, "mlctr_prepare",
                                 {"raw": raw, "out": str(tmp_path / "prepared2")},
                                 str(tmp_path / "logs"))
    assert unsampled["peak_bytes"] is None and unsampled["peak_rss_bytes"] > 10 * 2**20
    with pytest.raises(SystemExit, match="mlctr_prepare"):
        vs_fuxictr.run_worker(sys.executable, "mlctr_prepare", {"raw": str(tmp_path / "missing"),
                                                          "out": str(tmp_path / "p2")},
                         str(tmp_path / "logs"))


def test_bench_profile_names_the_kind_of_each_compiled_op():
    # In-function: its `lib` applies the entry point's process settings to this process (the
    # `warm` allocator, the unrolled Threefry lowering: bitwise the same random bits), so
    # only when this test runs.
    from experiments.benchmarks import profile as bench_profile
    import jax
    import jax.numpy as jnp

    def f(a, b, ids):
        table = jnp.zeros((64, 8)).at[ids].add(1.0)  # a scatter
        return jnp.tanh(a @ b).sum() + jnp.sort(a[:, 0]).sum() + table.sum()

    a = jnp.ones((32, 32))
    text = jax.jit(f).lower(a, a, jnp.arange(16) % 64).compile().as_text()
    kinds = bench_profile.op_kinds(text)
    assert {"matmul", "sort", "scatter"} <= set(kinds.values())
    assert set(kinds.values()) <= {kind for kind, _ in bench_profile.KINDS} | {"elementwise"}


def test_tower_widths_are_the_models_dnn_inputs():
    # 39 fields x 16: DeepFM/DCN read the flat embeddings; IPNN adds 741 inner products;
    # FiBiNET's DNN reads two bilinear layers of 741 field pairs x 16 (FuxiCTR's
    # fields * (fields - 1) * dim).
    assert [vs_fuxictr.tower_input_width(m, 16) for m in ("deepfm", "dcn", "ipnn", "fibinet")] == [
        624, 624, 624 + 741, 39 * 38 * 16]


def test_mlctr_tower_worker_times_its_steps(tmp_path):
    hyper = dict(vs_fuxictr.HYPER, dnn_hidden_units=(8, 8))
    got = vs_fuxictr.run_worker(sys.executable, "mlctr_tower",
                           {"model": "deepfm", "width": 12, "seed": 0, "hyper": hyper,
                            "steps": 2}, str(tmp_path))
    assert got["tower_steps"] == 2 and got["tower_step_seconds"] > 0 and got["cpu_seconds"] > 0
