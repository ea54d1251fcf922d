"""mlctr.export: every registry model and the ensemble, exported as StableHLO (read back
with jax.export.deserialize) and ONNX (run in onnxruntime), score the test split as
`mlctr.predict` does within 1e-6; the SavedModel of the ensemble too (where tensorflow is
installed); a tampered export, a run with a missing or corrupt best/, an unknown peer and
an unsupported format are one line each."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mlctr import predict
from mlctr.configs import tiny
from mlctr.data import layout
from mlctr.export import exporter, manifest
from mlctr.export.manifest import ExportError
from mlctr.models import MODELS, model_hparam_names
from mlctr.run import checkpoint
from mlctr.run import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTRY = sorted(MODELS)  # read at collection: models added to the registry are tested too


def _registry_model_sets(models):
    """A tiny hyperparameter set keyed by every registry name (its architecture), from
    the tiny set of that key or of another key with that architecture (pnn: ipnn's)."""
    sets = {}
    for name in REGISTRY:
        base = models[name] if name in models else next(
            (s for s in models.values() if s.get("model") == name), {})
        valid = model_hparam_names(name)
        sets[name] = dict({k: v for k, v in dict(base).items() if k in valid}, model=name)
    return sets


@pytest.fixture(scope="module")
def registry_run(tiny_data_dir, tmp_path_factory):
    """(run dir, test ids, {peer: predict's probabilities, 'ensemble': their mean}) of a
    2-step run with one peer of every registry model."""
    run = str(tmp_path_factory.mktemp("export") / "run")
    config = tiny.get_config()
    with config.unlocked():
        config.models.update(_registry_model_sets(config.models))
        config.mode, config.peers, config.data.data_dir = "train", ",".join(REGISTRY), tiny_data_dir
        config.train.max_steps = 2
    train.train_and_evaluate(config, run)
    _, peers, params, batch_stats, data_dir = predict.load_run(run)
    ids = np.asarray(layout.open_rows(layout.ids_path(data_dir, "test")), np.int32)
    probs = predict.peer_probabilities(peers, params, batch_stats, ids, batch_size=256,
                                       peer_execution="auto")
    expected = dict(zip(peers.names, probs), ensemble=probs.mean(axis=0))
    return run, ids, expected


@pytest.mark.parametrize("fmt", ["stablehlo", "onnx"])
@pytest.mark.parametrize("peer", REGISTRY + ["ensemble"])
def test_export_matches_predict(registry_run, peer, fmt, tmp_path):
    """Read back through jax.export.deserialize (stablehlo) or onnxruntime (onnx)."""
    if fmt == "onnx":
        pytest.importorskip("jax2onnx", reason="the onnx format needs pip install 'mlctr[onnx]'")
    run, ids, expected = registry_run
    out = str(tmp_path / fmt)
    written = exporter.export_run(run, out, fmt, peer="" if peer == "ensemble" else peer)
    assert written["scored_with"] == peer and written["input"]["shape"] == ["batch", 39]
    loaded, model = exporter.load(out)
    assert loaded == written
    for rows in (ids, ids[:1], ids[:37]):  # one artefact, any batch size
        probs = model(rows)
        assert probs.dtype == np.float32 and probs.shape == (len(rows),)
        np.testing.assert_allclose(probs, expected[peer][:len(rows)], rtol=0, atol=1e-6,
                                   err_msg=f"{fmt} export of {peer}")


def test_export_savedmodel_matches_predict(registry_run, tmp_path):
    pytest.importorskip("tensorflow", reason="the savedmodel format needs "
                        "pip install 'mlctr[savedmodel]'")
    run, ids, expected = registry_run
    out = str(tmp_path / "sm")
    exporter.export_run(run, out, "savedmodel", peer="deepfm")
    _, model = exporter.load(out)
    np.testing.assert_allclose(model(ids), expected["deepfm"], rtol=0, atol=1e-6)


def _cli(*flags):
    return subprocess.run([sys.executable, "-m", "mlctr.export", *flags], capture_output=True,
                          text=True, cwd=REPO, timeout=600)


def _one_error_line(proc):
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlctr.export: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def _flip_bytes(path):
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    open(path, "wb").write(bytes(data))


def test_export_tampered_directory_is_refused_in_one_line(registry_run, tmp_path):
    run, ids, expected = registry_run
    out = str(tmp_path / "ex")
    proc = _cli(f"--workdir={run}", "--peer=lr", "--format=stablehlo", f"--out={out}")
    assert proc.returncode == 0 and "exported lr of" in proc.stdout, proc.stderr[-2000:]
    assert "verified" in _cli(f"--check={out}").stdout
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    _flip_bytes(os.path.join(copy, "model.stablehlo"))
    line = _one_error_line(_cli(f"--check={copy}"))
    assert "model.stablehlo content differs from its sha256" in line
    for change, message in ((lambda d: os.remove(os.path.join(d, "preprocess", "vocab", "C3.npy")),
                             "preprocess/vocab/C3.npy is missing"),
                            (lambda d: open(os.path.join(d, "extra.bin"), "wb").close(),
                             "extra.bin is not listed"),
                            (lambda d: os.remove(os.path.join(d, manifest.MANIFEST)),
                             "manifest.json not found")):
        shutil.rmtree(copy)
        shutil.copytree(out, copy)
        change(copy)
        with pytest.raises(ExportError, match=message):
            exporter.load(copy)


def test_export_bad_run_peer_format_or_out_is_one_line(registry_run, tmp_path):
    run, ids, expected = registry_run
    out = str(tmp_path / "ex")
    line = _one_error_line(_cli(f"--workdir={run}", "--format=tflite", f"--out={out}"))
    assert "unsupported format 'tflite'" in line
    line = _one_error_line(_cli(f"--workdir={run}", "--peer=nope", f"--out={out}"))
    assert "has no peer 'nope'" in line and not os.path.exists(out)
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    best = os.path.join(copy, checkpoint.BEST_DIR)
    files = [os.path.join(r, n) for r, _, ns in os.walk(best) for n in ns
             if n != checkpoint.MANIFEST]
    _flip_bytes(max(files, key=os.path.getsize))
    line = _one_error_line(_cli(f"--workdir={copy}", "--peer=lr", f"--out={out}"))
    assert "content differs from its sha256" in line and not os.path.exists(out)
    shutil.rmtree(best)
    with pytest.raises(checkpoint.CheckpointError, match="no peer weights at"):
        exporter.export_run(copy, out, "stablehlo")
    os.makedirs(out)
    with pytest.raises(ExportError, match="exists; choose a new directory"):
        exporter.export_run(run, out, "stablehlo")
    with pytest.raises(ExportError, match="does not exist"):
        exporter.export_run(run, str(tmp_path / "no" / "ex"), "stablehlo")


def test_export_quotient_remainder_run(tiny_data_dir, tmp_path):
    """QR tables: the exported model maps dataset ids to table rows itself."""
    run = str(tmp_path / "run")
    config = tiny.get_config()
    with config.unlocked():
        config.mode, config.peers, config.data.data_dir = "train", "fm", tiny_data_dir
        config.vocab.qr_collisions, config.train.max_steps = 4, 2
    train.train_and_evaluate(config, run)
    _, peers, params, batch_stats, data_dir = predict.load_run(run)
    assert peers.qr_layout is not None
    ids = np.asarray(layout.open_rows(layout.ids_path(data_dir, "test")), np.int32)
    expected = predict.peer_probabilities(peers, params, batch_stats, ids, batch_size=256,
                                          peer_execution="auto")[0]
    written = exporter.export_run(run, str(tmp_path / "ex"), "stablehlo", peer="fm")
    assert written["vocab"]["qr_collisions"] == 4
    np.testing.assert_allclose(exporter.load(str(tmp_path / "ex"))[1](ids), expected,
                               rtol=0, atol=1e-6)


def test_export_serving_benchmark_prints_its_json_line(tiny_data_dir, tmp_path):
    """A smoke test of experiments/benchmarks/serving.py (two calls per case, the numbers
    mean nothing): its last line is the JSON docs/serving.md's table comes from."""
    pytest.importorskip("jax2onnx", reason="the serving benchmark times the onnx export")
    run = str(tmp_path / "run")
    config = tiny.get_config()
    with config.unlocked():
        config.mode, config.peers, config.data.data_dir = "train", "lr,fm", tiny_data_dir
        config.train.max_steps = 1
    train.train_and_evaluate(config, run)
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks.serving",
                           f"--workdir={run}", "--peer=fm", "--batch_sizes=1,8",
                           "--seconds=0", "--min_calls=2"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["results"]) == {"fm", "ensemble"}
    assert result["results"]["ensemble"]["peers"] == ["lr", "fm"]
    for runtime in ("jax_jit", "onnxruntime", "numpy_preprocess"):
        stats = result["results"]["fm"][runtime]
        assert set(stats) == {"1", "8"} and stats["8"]["calls"] >= 2
        assert 0 < stats["1"]["p50_ms"] <= stats["1"]["p99_ms"]
