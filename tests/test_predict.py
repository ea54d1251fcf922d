"""The predict CLI: round trip, skipped rows keep their line numbers, and every bad run,
dataset or output path is one line on stderr (exit 1), never a traceback."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from mlctr.run import checkpoint
from mlctr import predict
from mlctr.run import train
from mlctr.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raw_file(data_dir):
    raw_dir = os.path.join(os.path.dirname(data_dir), "raw")
    return os.path.join(raw_dir, sorted(f for f in os.listdir(raw_dir) if f.endswith(".txt"))[0])


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
    """(run dir, the raw file's first 20 lines) of a 5-step run of deepfm and dcn."""
    run = str(tmp_path_factory.mktemp("predict") / "run")
    config = tiny.get_config()
    with config.unlocked():
        config.mode, config.peers, config.data.data_dir = "train", "deepfm,dcn", tiny_data_dir
        config.train.max_steps = 5
    train.train_and_evaluate(config, run)
    with open(_raw_file(tiny_data_dir)) as f:
        rows = [next(f) for _ in range(20)]
    return run, rows


# As root every file is readable: the permission tests run the CLI as user nobody.
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _cli(run, raw, out, *extra, as_nobody=False):
    env = ({**os.environ, "HOME": os.path.dirname(str(out)), "JAX_COMPILATION_CACHE_DIR": ""}
           if as_nobody else None)
    return subprocess.run([*(AS_NOBODY if as_nobody else []), sys.executable, "-m",
                           "mlctr.predict", f"--workdir={run}", f"--raw={raw}",
                           f"--out={out}", *extra], env=env,
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def _one_error_line(proc):
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mlctr.predict: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def _csv(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "row,label,prob"
    return [line.split(",") for line in lines[1:]]


def test_predict_cli_round_trip_and_bad_file(trained, tmp_path):
    run, rows = trained
    sample = tmp_path / "sample.txt"
    sample.write_text("".join(rows))
    out = tmp_path / "pred.csv"
    proc = _cli(run, sample, out, "--peer=dcn")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = _csv(out)
    assert [int(r[0]) for r in table] == list(range(1, 21))  # 1-based input line numbers
    assert [int(r[1]) for r in table] == [int(r.split("\t")[0]) for r in rows]
    probs = np.array([float(r[2]) for r in table])
    assert np.all((probs > 0) & (probs < 1))
    # The same rows scored in-process agree with the CLI; the ensemble differs from one peer.
    in_process = predict.predict_file(run, str(sample), peer="dcn")
    np.testing.assert_allclose(in_process.probs, probs, atol=1e-6)
    assert not np.allclose(predict.predict_file(run, str(sample)).probs, probs)

    bad = tmp_path / "bad.txt"
    bad.write_text(rows[0] + "1\t2\tthree\n")
    line = _one_error_line(_cli(run, bad, tmp_path / "bad.csv"))
    assert "bad.txt:2:" in line  # file:line: problem
    assert not (tmp_path / "bad.csv").exists()


def test_predict_skip_bad_rows_keeps_input_line_numbers(trained, tmp_path):
    run, rows = trained
    sample = tmp_path / "sample.txt"
    # Lines 3 and 7 are bad: too few columns, and a non-numeric label.
    lines = list(rows[:10])
    lines[2] = "1\t2\tthree\n"
    lines[6] = "x" + rows[6][1:]
    sample.write_text("".join(lines))
    out = tmp_path / "pred.csv"
    proc = _cli(run, sample, out, "--skip_bad_rows")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 2 bad rows" in proc.stdout
    table = _csv(out)
    assert [int(r[0]) for r in table] == [1, 2, 4, 5, 6, 8, 9, 10]
    assert [int(r[1]) for r in table] == [int(rows[k - 1].split("\t")[0]) for k in
                                          (1, 2, 4, 5, 6, 8, 9, 10)]
    # Each kept row scores as it does alone: nothing shifted.
    full = predict.predict_file(run, _write(tmp_path / "good.txt", rows[:10]))
    kept = np.array([float(r[2]) for r in table])
    np.testing.assert_allclose(kept, full.probs[[0, 1, 3, 4, 5, 7, 8, 9]], atol=1e-6)
    summary = json.loads((tmp_path / "pred.csv.json").read_text())
    assert summary["rows_scored"] == 8 and summary["rows_skipped"] == 2
    assert sum(summary["skipped_by_reason"].values()) == 2


def _write(path, lines):
    path.write_text("".join(lines))
    return str(path)


def test_checksum_corrupt_best_is_one_clear_line(trained, tmp_path):
    run, rows = trained
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    best = os.path.join(copy, checkpoint.BEST_DIR)
    files = [os.path.join(r, n) for r, _, ns in os.walk(best) for n in ns
             if n != checkpoint.MANIFEST]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2:len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2:][:8])
    open(path, "wb").write(bytes(data))
    line = _one_error_line(_cli(copy, _write(tmp_path / "s.txt", rows), tmp_path / "p.csv"))
    assert "content differs from its sha256" in line and os.path.relpath(path, best) in line
    assert not (tmp_path / "p.csv").exists()


def test_predict_best_missing_or_truncated(trained, tmp_path):
    run, rows = trained
    sample = _write(tmp_path / "s.txt", rows)
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    best = os.path.join(copy, checkpoint.BEST_DIR)
    files = sorted((os.path.join(r, n) for r, _, ns in os.walk(best) for n in ns
                    if n != checkpoint.MANIFEST), key=os.path.getsize)
    with open(files[-1], "r+b") as f:
        f.truncate(os.path.getsize(files[-1]) // 3)
    with pytest.raises(checkpoint.CheckpointError, match="differs from its sha256"):
        predict.predict_file(copy, sample)
    os.remove(os.path.join(best, checkpoint.MANIFEST))  # a run from before the checksums
    with pytest.raises(checkpoint.CheckpointError, match="truncated or damaged"):
        predict.predict_file(copy, sample, allow_unverified=True)
    shutil.rmtree(best)
    with pytest.raises(checkpoint.CheckpointError, match="no peer weights at"):
        predict.predict_file(copy, sample)


def test_predict_output_directory_missing_is_refused_before_scoring(trained, tmp_path):
    run, rows = trained
    out = tmp_path / "no_such_dir" / "pred.csv"
    line = _one_error_line(_cli(run, _write(tmp_path / "s.txt", rows), out))
    assert f"directory {tmp_path / 'no_such_dir'} does not exist" in line
    with pytest.raises(predict.PredictError, match="is a directory"):
        predict.check_output(str(tmp_path))


def test_predict_dataset_prepared_again_names_what_differs(trained, tiny_data_dir, tmp_path):
    from mlctr.data.prepare import prepare

    run, rows = trained
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    # The same raw rows prepared with the other protocol: other vocabularies.
    other = str(tmp_path / "other")
    prepare("synthetic", _raw_file(tiny_data_dir), other, protocol="x4_002", num_rows=4000,
            seed=11)
    config_path = os.path.join(copy, "config.json")
    config = json.loads(open(config_path).read())
    config["data"]["data_dir"] = other
    open(config_path, "w").write(json.dumps(config))

    with pytest.raises(predict.PredictError) as error:
        predict.predict_file(copy, _write(tmp_path / "s.txt", rows))
    message = str(error.value)
    assert "\n" not in message and "is not the one run" in message
    assert "vocab_size " in message and " at training, " in message


def test_importing_predict_defines_no_flags():
    """The study imports it next to entry points that define their own --workdir."""
    code = ("from absl import flags; import mlctr.main, mlctr.predict, mlctr.study; "
            "assert 'raw' not in flags.FLAGS")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=300)


def _flip_bytes(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2:len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2:][:8])
    open(path, "wb").write(bytes(data))


def test_unverified_best_without_manifest_is_refused_unless_allowed(trained, tmp_path):
    """A best/ from before checksums with flipped bytes scored silently wrong (issue 26):
    an unverifiable best/ is refused in one line naming --allow_unverified."""
    run, rows = trained
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    best = os.path.join(copy, checkpoint.BEST_DIR)
    os.remove(os.path.join(best, checkpoint.MANIFEST))
    _flip_bytes(max((os.path.join(r, n) for r, _, ns in os.walk(best) for n in ns),
                    key=os.path.getsize))
    sample = _write(tmp_path / "s.txt", rows)
    line = _one_error_line(_cli(copy, sample, tmp_path / "p.csv"))
    assert "has no checksum manifest" in line and "--allow_unverified" in line
    assert not (tmp_path / "p.csv").exists()
    proc = _cli(copy, sample, tmp_path / "p.csv", "--allow_unverified")
    assert proc.returncode == 0 and "not verified" in proc.stderr, proc.stderr[-2000:]
    # Finetuning from it (init_from) is refused the same way, naming the config key.
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"no checksum manifest.*checkpoint\.allow_unverified=True"):
        checkpoint.load_peer_weights(copy, allow_hint="--config.checkpoint.allow_unverified=True")


def test_symlink_planted_at_predict_temporary_names_is_not_followed(trained, tmp_path):
    """With OUT.tmp (and OUT.json.tmp) symlinks to another file, predict overwrote that
    file (issue 26): temporaries are fresh mkstemp names, links are never followed."""
    run, rows = trained
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "pred.csv"
    for name in ("pred.csv.tmp", "pred.csv.json.tmp"):
        os.symlink(victim, tmp_path / name)
    proc = _cli(run, _write(tmp_path / "s.txt", rows), out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert victim.read_text() == "keep me\n"
    assert len(_csv(out)) == len(rows) and json.loads((tmp_path / "pred.csv.json").read_text())
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".pred.csv")]  # none left


@pytest.fixture
def open_tmp():
    """A directory every user may enter and write (pytest's own tree is private to its
    user, and a concurrent pytest makes it so again), removed afterwards."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="mlctr-test-", dir="/tmp"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_permission_denied_raw_file_is_one_line(trained, tiny_data_dir, tmp_path, open_tmp):
    """A raw file this user cannot read was a PermissionError traceback (issue 26)."""
    run, rows = trained
    as_nobody = os.geteuid() == 0  # root reads any file: run predict as user nobody
    if as_nobody:  # the run and its dataset where user nobody can read them
        shutil.copytree(tiny_data_dir, open_tmp / "data")
        shutil.copytree(run, open_tmp / "run")
        run, config = str(open_tmp / "run"), json.loads((open_tmp / "run/config.json").read_text())
        config["data"]["data_dir"] = str(open_tmp / "data")
        (open_tmp / "run/config.json").write_text(json.dumps(config))
        for root, dirs, files in os.walk(open_tmp):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o777)
        probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import mlctr.predict"],
                               cwd=REPO, capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"user nobody cannot run this checkout's Python: {probe.stderr[-200:]}")
    where = open_tmp if as_nobody else tmp_path
    sample = _write(where / "s.txt", rows)
    os.chmod(sample, 0)
    line = _one_error_line(_cli(run, sample, where / "p.csv", as_nobody=as_nobody))
    assert line.endswith(f"cannot read {sample}: Permission denied"), line
