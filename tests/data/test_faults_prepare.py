"""Issue 26 (round two of "nothing silently wrong"), the dataset side: a dataset swapped
under a running training, the fingerprint of the table layout, conflicting settings,
field names as paths, `--out` a symlink, Ctrl-C, Criteo 1TB days, and the hashed
vocabularies' tracebacks. Each test names its class (docs/reliability.md lists them)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from mlctr import predict
from mlctr.configs import tiny
from mlctr.data import DataError, criteo_1tb
from mlctr.data.errors import DatasetError
from mlctr.data.prepare import prepare
from mlctr.data.reader import PreparedDataset
from mlctr.run import inputs
from mlctr.run.errors import RunError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(data_dir, **vocab):
    config = tiny.get_config()
    with config.unlocked():
        config.mode, config.data.data_dir = "train", str(data_dir)
        config.data.num_rows = 600
        config.vocab.update(vocab)
    return config


def _synthetic(raw, out, **kwargs):
    return prepare("synthetic", str(raw), str(out), num_rows=kwargs.pop("num_rows", 600),
                   **kwargs)


def test_swap_of_the_dataset_under_a_running_training_is_not_read(tmp_path):
    """`prepare --overwrite` into a training run's data_dir: the run opened its test split
    lazily after the swap and scored the new ids (AUC 0.575 instead of 0.732)."""
    out = tmp_path / "data"
    _synthetic(tmp_path / "raw.txt", out, seed=1)
    config = _config(out)
    dataset = inputs.open_run_dataset(config, str(tmp_path / "run"))  # as train.build does
    before = {s: np.array(PreparedDataset(str(out)).arrays(s)[0]) for s in ("valid", "test")}
    _synthetic(tmp_path / "raw2.txt", out, seed=2, overwrite=True)  # the swap
    after = PreparedDataset(str(out)).arrays("test")[0]
    assert not np.array_equal(np.asarray(after), before["test"])  # the disk changed
    for split in ("valid", "test"):  # the run still reads what it opened
        np.testing.assert_array_equal(np.asarray(dataset.arrays(split)[0]), before[split])
    assert inputs.warn_if_replaced(dataset)


def test_fingerprint_covers_the_hashed_table_layout(tmp_path):
    """A hashed dataset prepared again with other per-field buckets kept its vocab_size,
    so predict scored and resume continued with ids in other rows."""
    raw, out = tmp_path / "raw.txt", tmp_path / "data"
    _synthetic(raw, out, vocab_mode="hash", hash_buckets=64, field_buckets="I1=32,I2=16")
    first = inputs.dataset_fingerprint(PreparedDataset(str(out)))
    prepare("synthetic", str(raw), str(out), vocab_mode="hash", hash_buckets=64,
            field_buckets="I1=16,I2=32", overwrite=True)
    second = inputs.dataset_fingerprint(PreparedDataset(str(out)))
    assert first["vocab_size"] == second["vocab_size"]
    differences = inputs.fingerprint_differences(first, second)
    assert len(differences) == 1 and differences[0].startswith("the table layout"), differences
    # predict refuses the run's dataset prepared again, naming the layout.
    run = tmp_path / "run"
    run.mkdir()
    (run / inputs.DATASET_RECORD).write_text(json.dumps(first))
    with pytest.raises(predict.PredictError, match="the table layout"):
        predict.check_dataset(str(run), PreparedDataset(str(out)), str(out))
    # A record from before layout_sha256 is compared on what it has: old runs still work.
    old = {k: v for k, v in first.items() if k != "layout_sha256"}
    assert inputs.fingerprint_differences(old, second) == []


def test_conflict_field_buckets_given_twice_or_hash_options_without_hash_mode(tmp_path):
    raw = tmp_path / "raw.txt"
    with pytest.raises(ValueError, match=r"field 'I1' is given twice \(I1=64 and I1=32\)"):
        _synthetic(raw, tmp_path / "a", vocab_mode="hash", field_buckets="I1=64,I1=32")
    with pytest.raises(ValueError, match="hash_buckets=64 is for vocab_mode='hash'"):
        _synthetic(raw, tmp_path / "b", hash_buckets=64)
    proc = subprocess.run([sys.executable, "-m", "mlctr.data.prepare", "--dataset=synthetic",
                           f"--raw={raw}", f"--out={tmp_path / 'c'}", "--num_rows=100",
                           "--hash_buckets=1048576"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: --hash_buckets is for --vocab_mode=hash (a fitted vocabulary has no buckets): "
        "pass --vocab_mode=hash, or drop it"), proc.stderr[-2000:]
    assert not (tmp_path / "c").exists()


def test_conflict_config_vocab_against_the_prepared_dataset(tmp_path):
    """vocab.hash_buckets=256 on a 4096-bucket dataset trained on 4096 (config.json said
    256); vocab.max_rows on a fitted dataset was not applied."""
    hashed, fitted = tmp_path / "hashed", tmp_path / "fitted"
    _synthetic(tmp_path / "raw.txt", hashed, vocab_mode="hash", hash_buckets=4096)
    _synthetic(tmp_path / "raw2.txt", fitted)
    with pytest.raises(RunError, match=r"asks for other buckets than .*hashed was prepared "
                                       r"with \(39 field\(s\): I1 256 vs 4096"):
        inputs.open_run_dataset(_config(hashed, mode="hash", hash_buckets=256), "unused")
    inputs.open_run_dataset(_config(hashed, mode="hash", hash_buckets=4096), "unused")
    with pytest.raises(RunError, match=r"config.vocab.max_rows is 5, but .*fitted was "
                                       r"prepared with max_rows 0"):
        inputs.open_run_dataset(_config(fitted, max_rows=5), "unused")
    with pytest.raises(RunError, match=r"hash_buckets / field_buckets apply to vocab.mode="
                                       r"'hash' only"):
        inputs.open_run_dataset(_config(fitted, hash_buckets=256), "unused")


# ABS: an absolute path under tmp_path (code without the check writes <ABS>.npy there).
@pytest.mark.parametrize("name", ["../../x", "ABS", "..", ".hidden", "a/b", "a b"])
def test_traversal_field_name_in_a_feature_spec_is_refused(tmp_path, name):
    """A spec field named `../../x` or an absolute path made prepare write vocab/<name>.npy
    outside the dataset."""
    name = str(tmp_path / "abs" / "x") if name == "ABS" else name
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        (raw / f"{split}.csv").write_text(f"y,{name},b\n" + "1,u,v\n0,w,v\n" * 5)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"label": "y", "fields": [name, "b"]}))
    with pytest.raises(DataError, match=rf"spec.json: field name .* is not allowed"):
        prepare("csv", str(raw), str(tmp_path / "sub" / "out"), feature_spec=str(spec))
    assert sorted(os.listdir(tmp_path)) == ["raw", "spec.json"]  # nothing written anywhere


def test_symlink_out_is_refused_and_its_target_kept(tmp_path):
    """`--out` a link to a dataset elsewhere: --overwrite replaced the link by a local
    directory and left the target's old dataset and a stray `.NAME.prepare-*`."""
    target, link = tmp_path / "elsewhere", tmp_path / "link"
    _synthetic(tmp_path / "raw.txt", target)
    before = (target / "feature_map.json").read_text()
    os.symlink(target, link)
    with pytest.raises(DatasetError, match=rf"link: is a symlink \(to {target}\); prepare "
                                           rf"refuses links: pass the target directory"):
        _synthetic(tmp_path / "raw.txt", link, overwrite=True, seed=5)
    assert os.path.islink(link) and (target / "feature_map.json").read_text() == before
    assert not [n for n in os.listdir(tmp_path) if ".prepare-" in n]  # no stray build


_INTERRUPTED_PREPARE = """
import sys
from absl import app
from mlctr.data.prepare import __main__ as cli, sources
def interrupted(*args, **kwargs):
    raise KeyboardInterrupt  # Ctrl-C while the rows are read
sources.prepare_file = interrupted
cli._define_flags()
app.run(cli.main)
"""


def test_sigint_during_prepare_overwrite_is_one_line_and_keeps_the_dataset(tmp_path):
    """Ctrl-C during `prepare --overwrite` was a KeyboardInterrupt traceback."""
    out = tmp_path / "data"
    _synthetic(tmp_path / "raw.txt", out)
    before = (out / "feature_map.json").read_text()
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_PREPARE, "--dataset=synthetic",
                           f"--raw={tmp_path / 'raw.txt'}", f"--out={out}", "--overwrite"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: interrupted (Ctrl-C); {out} is as it was before this prepare (the partial "
        "build was removed)")
    assert (out / "feature_map.json").read_text() == before
    assert not [n for n in os.listdir(tmp_path) if ".prepare-" in n]
    PreparedDataset(str(out)).verify()


def test_criteo_1tb_two_files_for_one_day_are_refused(tmp_path):
    """A plain day_5 next to day_5.gz silently won (the .gz's rows gone)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    row = "1\t" + "\t".join(["3"] * 13) + "\t" + "\t".join(["0a0b0c0d"] * 26) + "\n"
    for day in range(criteo_1tb.NUM_DAYS):
        (raw / f"day_{day}").write_text(row * 3)
    (raw / "day_5.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"day_5: two files for day 5: day_5 and day_5.gz"):
        prepare("criteo_1tb", str(raw), str(tmp_path / "out"), vocab_mode="hash",
                hash_buckets=64)
    assert not (tmp_path / "out").exists()


def test_hashed_vocab_config_faults_are_one_line(tmp_path):
    """Through the trainer (config.vocab), these were ValueError / IsADirectoryError
    tracebacks: an unknown field in field_buckets, ids over the int32 range."""
    with pytest.raises(RunError, match=r"field_buckets: unknown field 'Z9'"):
        inputs.ensure_prepared(_config(tmp_path / "a", mode="hash", field_buckets="Z9=5"),
                               str(tmp_path / "run"))
    with pytest.raises(RunError, match=r"ids in all: more than the int32 ids hold"):
        inputs.ensure_prepared(_config(tmp_path / "b", mode="hash", hash_buckets=1 << 27),
                               str(tmp_path / "run"))


def test_hashed_vocab_csv_feature_spec_through_the_config(tmp_path):
    """dataset=csv had no way to pass its feature spec through the config; a spec that is
    a directory was an IsADirectoryError traceback."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        (raw / f"{split}.csv").write_text("y,a,b\n" + "1,u,v\n0,w,v\n" * 20)
    config = _config(tmp_path / "data", mode="hash", hash_buckets=16)
    with config.unlocked():
        config.data.dataset, config.data.raw = "csv", str(raw)
    with pytest.raises(RunError, match=r"names its columns in config.data.feature_spec"):
        inputs.ensure_prepared(config, str(tmp_path / "run"))
    with config.unlocked():
        config.data.feature_spec = str(tmp_path)  # a directory
    with pytest.raises(DataError, match=r"cannot read the feature spec: Is a directory"):
        inputs.ensure_prepared(config, str(tmp_path / "run"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"label": "y", "fields": ["a", "b"]}))
    with config.unlocked():
        config.data.feature_spec = str(spec)
    data_dir = inputs.ensure_prepared(config, str(tmp_path / "run"))
    assert PreparedDataset(data_dir).field_names == ["a", "b"]
