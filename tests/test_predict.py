"""The predict CLI round-trips rows of a trained run and rejects a bad file cleanly."""
import os
import subprocess
import sys

import numpy as np

from mlctr import predict
from mlctr import train
from mlctr.data.reader import PreparedDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raw_file(data_dir):
    raw_dir = os.path.join(os.path.dirname(data_dir), "raw")
    return os.path.join(raw_dir, sorted(f for f in os.listdir(raw_dir) if f.endswith(".txt"))[0])


def test_predict_cli_round_trip_and_bad_file(tiny_config, tmp_path):
    config = tiny_config(peers="deepfm,dcn", max_steps=5)
    run = str(tmp_path / "run")
    train.train_and_evaluate(config, run)
    raw = _raw_file(config.data.data_dir)
    rows = open(raw).read().splitlines(keepends=True)[:20]
    sample = tmp_path / "sample.txt"
    sample.write_text("".join(rows))
    out = tmp_path / "pred.csv"
    cmd = [sys.executable, "-m", "mlctr.predict", f"--workdir={run}", f"--raw={sample}",
           f"--out={out}"]
    proc = subprocess.run(cmd + ["--peer=dcn"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert lines[0] == "row,label,prob" and len(lines) == 21
    labels = [int(line.split(",")[1]) for line in lines[1:]]
    assert labels == [int(r.split("\t")[0]) for r in rows]
    probs = np.array([float(line.split(",")[2]) for line in lines[1:]])
    assert np.all((probs > 0) & (probs < 1))
    # The same rows scored in-process agree with the CLI; the ensemble differs from one peer.
    in_process, _ = predict.predict_file(run, str(sample), peer="dcn")
    np.testing.assert_allclose(in_process, probs, atol=1e-6)
    ensemble, _ = predict.predict_file(run, str(sample))
    assert not np.allclose(ensemble, probs)

    bad = tmp_path / "bad.txt"
    bad.write_text(rows[0] + "1\t2\tthree\n")
    proc = subprocess.run(cmd[:-1] + [f"--raw={bad}", f"--out={tmp_path / 'bad.csv'}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "bad.txt:2:" in proc.stderr  # file:line: problem
    assert not (tmp_path / "bad.csv").exists()
