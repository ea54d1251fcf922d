"""The runners on every dataset kind prepare knows, and the user's data keys respected.

experiments/datasets.py decides what a runner trains on from --dataset / --raw /
--data_dir / --feature_spec and the config: the in-process tests check each rule (a
value the user gave is kept, a disagreement is one error naming the key); the smoke
tests run one runner per dataset kind end to end on rows the test writes in BARS's csv
format (or Criteo 1TB day files), a few steps, one seed: the numbers mean nothing.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import datasets
from mlctr.configs import bars
from mlctr.configs import default
from mlctr.configs import tiny
from mlctr.data import bars_csv
from mlctr.data import criteo_1tb
from mlctr.data.prepare import prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=" + os.path.join(REPO, "mlctr/configs/tiny.py"), "--config.peers=deepfm,dcn",
        "--config.train.max_steps=3", "--config.finetune.max_steps=2", "--seeds=0"]
SIZES = {"train": 240, "valid": 60, "test": 60}


def write_bars_csv(directory, columns, label="label", seed=0):
    """train/valid/test.csv in BARS's x1 format: a header, one value per column; the label
    follows the first column's value, so both classes occur and AUC is defined."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for split, n in SIZES.items():
        values = rng.integers(0, 5, size=(n, len(columns)))
        labels = (rng.random(n) < 1 / (1 + np.exp(-(values[:, 0] - 2.0)))).astype(int)
        lines = [",".join([label] + list(columns))]
        lines += [",".join([str(y)] + [f"{c}{v}" for c, v in zip(columns, row)])
                  for y, row in zip(labels, values)]
        with open(os.path.join(directory, f"{split}.csv"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return str(directory)


def write_1tb_days(directory, rows_per_day=12, eval_rows=120):
    """Tiny Criteo 1TB day files day_0 .. day_23 (tab-separated Criteo rows)."""
    rng = np.random.default_rng(1)
    os.makedirs(directory, exist_ok=True)
    for day in range(criteo_1tb.NUM_DAYS):
        lines = []
        for _ in range(eval_rows if day == criteo_1tb.EVAL_DAY else rows_per_day):
            ints = [str(int(v)) for v in rng.integers(0, 20, 13)]
            cats = [f"{int(v):08x}" for v in rng.integers(0, 30, 26)]
            label = int(rng.random() < (0.8 if int(ints[0]) > 10 else 0.2))
            lines.append("\t".join([str(label)] + ints + cats) + "\n")
        with open(os.path.join(directory, f"day_{day}"), "w") as f:
            f.writelines(lines)
    return str(directory)


def _config(**data):
    config = tiny.get_config()
    with config.unlocked():
        config.data.update(data)
    return config


# ---------------------------------------------------------------------------
# The rules, in process (no training).


@pytest.fixture(scope="module")
def frappe(tmp_path_factory):
    """(raw dir, prepared dir) of a tiny frappe_x1 dataset."""
    root = tmp_path_factory.mktemp("frappe")
    raw = write_bars_csv(root / "raw", bars_csv.FORMATS["frappe_x1"].field_names)
    prepare("frappe_x1", raw, str(root / "prepared"))
    return raw, str(root / "prepared")


def test_given_keys_are_overrides_and_config_file_values():
    config = default.get_config()
    assert datasets.given_keys(config, []) == set()
    assert datasets.given_keys(config, ["data.dataset", "train.batch_size"]) == {"data.dataset"}
    with config.unlocked():
        config.data.dataset = "frappe_x1"  # as a config file (bars.py:frappe_x1) sets it
    assert datasets.given_keys(config, []) == {"data.dataset"}


def test_a_data_override_is_used_not_replaced(frappe, tmp_path):
    raw, prepared = frappe
    config = _config(dataset="frappe_x1", data_dir=prepared)
    datasets.configure(config, str(tmp_path), given={"data.dataset", "data.data_dir"})
    assert (config.data.dataset, config.data.data_dir) == ("frappe_x1", prepared)
    assert config.data.protocol == "x1"  # the feature map's, adopted: the user gave none
    # The prepared dir alone names the kind.
    config = _config()
    datasets.configure(config, str(tmp_path), data_dir=prepared)
    assert (config.data.dataset, config.data.data_dir) == ("frappe_x1", prepared)
    # A raw dir prepares into the experiment root, per kind.
    config = _config()
    datasets.configure(config, str(tmp_path), choice="frappe_x1", raw=raw)
    assert config.data.data_dir == str(tmp_path / "data" / "frappe_x1")
    assert (config.data.raw, config.data.protocol) == (raw, "x1")


@pytest.mark.parametrize("kwargs,config_data,given,says", [
    (dict(choice="criteo_x1"), dict(dataset="frappe_x1"), {"data.dataset"},
     "config.data.dataset='frappe_x1' and --dataset='criteo_x1' disagree"),
    (dict(raw="/elsewhere"), dict(dataset="frappe_x1", raw="/x"), {"data.dataset", "data.raw"},
     "config.data.raw='/x' and --raw='/elsewhere' disagree"),
    (dict(choice="movielens_x1", data_dir="PREPARED"), {}, set(),
     "--dataset='movielens_x1', but PREPARED holds a prepared 'frappe_x1' dataset"),
    (dict(data_dir="PREPARED"), dict(protocol="x4_002"), {"data.protocol"},
     "config.data.protocol='x4_002', but the dataset at PREPARED has 'x1'"),
    (dict(data_dir="PREPARED"), {}, {"vocab.mode"},
     "config.vocab.mode='hash', but the dataset at PREPARED has 'fit'"),
    (dict(choice="csv", raw="/r"), {}, set(), "--dataset=csv needs --feature_spec"),
    (dict(choice="avazu_x1"), {}, set(), "--dataset=avazu_x1 needs --raw"),
    (dict(choice="frappe_x1", raw="/r", feature_spec="s.json"), {}, set(),
     "--feature_spec is for --dataset=csv"),
])
def test_disagreements_stop_with_one_line_naming_the_key(frappe, tmp_path, kwargs, config_data,
                                                         given, says):
    _, prepared = frappe
    kwargs = {k: v.replace("PREPARED", prepared) for k, v in kwargs.items()}
    config = _config(**config_data)
    if "vocab.mode" in given:
        config.vocab.mode = "hash"
    with pytest.raises(datasets.DatasetChoiceError) as e:
        datasets.configure(config, str(tmp_path), given=given, **kwargs)
    assert says.replace("PREPARED", prepared) in str(e.value) and "\n" not in str(e.value)


def test_a_prepared_dataset_of_other_rows_is_refused(frappe, tmp_path):
    raw, _ = frappe
    other = write_bars_csv(tmp_path / "other", bars_csv.FORMATS["frappe_x1"].field_names, seed=3)
    config = _config()
    datasets.configure(config, str(tmp_path), choice="frappe_x1", raw=raw)
    prepare("frappe_x1", raw, config.data.data_dir)
    with pytest.raises(datasets.DatasetChoiceError, match="prepared from .*, not --raw"):
        datasets.configure(_config(), str(tmp_path), choice="frappe_x1", raw=other)
    synthetic = _config()
    synthetic.data.data_dir = str(tmp_path / "syn")
    prepare("synthetic", str(tmp_path / "syn" / "raw" / "s.txt"), str(tmp_path / "syn"),
            num_rows=300, seed=1)
    with pytest.raises(datasets.DatasetChoiceError, match="config.data.num_rows=4000, but"):
        datasets.configure(synthetic, str(tmp_path), given={"data.data_dir"})


# ---------------------------------------------------------------------------
# One runner per dataset kind, end to end (subprocesses, a few steps).


def _run(entry, workdir, *flags):
    # cotrain_size takes its peers from --order (a config.peers override is refused).
    tiny = [f for f in TINY if not (entry == "cotrain_size" and f.startswith("--config.peers"))]
    cmd = [sys.executable, "-m", f"experiments.{entry}", f"--workdir={workdir}", *tiny, *flags]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def _ran_on(workdir, kind) -> dict:
    """The data config of the first run under workdir (its config.json), checked for kind."""
    for root, _, files in os.walk(workdir):
        if "config.json" in files and "results.json" in files:
            with open(os.path.join(root, "config.json")) as f:
                data = json.load(f)["data"]
            assert data["dataset"] == kind
            return data
    raise AssertionError(f"no finished run under {workdir}")


@pytest.mark.parametrize("kind,entry,extra", [
    ("frappe_x1", "finetune", []),
    ("movielens_x1", "scratch", []),
    ("criteo_x1", "cotrain_size", ["--order=deepfm,dcn"]),
    ("avazu_x1", "variants", ["--alphas=1", "--config.vocab.mode=hash",
                              "--config.vocab.hash_buckets=64"]),
])
def test_runner_on_a_bars_x1_dataset(tmp_path, kind, entry, extra):
    raw = write_bars_csv(tmp_path / "raw", bars_csv.FORMATS[kind].field_names)
    proc = _run(entry, tmp_path / entry, f"--dataset={kind}", f"--raw={raw}",
                f"--pretrain_root={tmp_path / 'pretrain'}", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / entry / "table.md").exists()
    data = _ran_on(tmp_path / entry, kind)
    assert data["protocol"] == "x1" and data["raw"] == raw
    hashed = "--config.vocab.mode=hash" in extra
    assert data["data_dir"] == str(tmp_path / "data" / (kind + ("_hash" if hashed else "")))


def test_runner_on_a_users_csv_with_a_feature_spec(tmp_path):
    raw = write_bars_csv(tmp_path / "raw", ["user", "item", "price"], label="clicked")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"label": "clicked", "fields": [
        "user", "item", {"name": "price", "type": "numeric"}]}))
    proc = _run("companions", tmp_path / "companions", "--dataset=csv", f"--raw={raw}",
                f"--feature_spec={spec}", "--fractions=1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _ran_on(tmp_path / "companions", "csv")
    assert data["protocol"] == "csv" and data["feature_spec"] == str(spec)


def test_runner_on_criteo_1tb_day_files_with_hashed_ids(tmp_path):
    raw = write_1tb_days(tmp_path / "days")
    proc = _run("precision", tmp_path / "precision", "--dataset=criteo_1tb", f"--raw={raw}",
                "--config.vocab.mode=hash", "--config.vocab.hash_buckets=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _ran_on(tmp_path / "precision", "criteo_1tb")["data_dir"].endswith("criteo_1tb_hash")


def test_runner_uses_a_prepared_data_dir_given_as_config_overrides(frappe, tmp_path):
    _, prepared = frappe
    proc = _run("baselines", tmp_path / "baselines", "--config.data.dataset=frappe_x1",
                f"--config.data.data_dir={prepared}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _ran_on(tmp_path / "baselines", "frappe_x1")["data_dir"] == prepared


def test_runner_stops_with_one_line_when_flag_and_override_disagree(frappe, tmp_path):
    _, prepared = frappe
    proc = _run("finetune", tmp_path / "finetune", "--dataset=criteo_x1",
                "--config.data.dataset=frappe_x1", f"--config.data.data_dir={prepared}")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["experiments.finetune: error: config.data.dataset='frappe_x1' and "
                     "--dataset='criteo_x1' disagree: give one of them"]
    assert not (tmp_path / "finetune" / "seed0").exists()


@pytest.mark.parametrize("entry,flags,says", [
    ("finetune", ["--config.seed=5"], "config.seed: experiments.finetune sets it itself "
     "(from --seeds); drop the override"),
    ("cotrain_size", ["--order=deepfm,dcn", "--config.peers=deepfm,fm"], "config.peers: "
     "experiments.cotrain_size sets it itself (from --order)"),
    ("precision", ["--config.compute_dtype=bfloat16"], "config.compute_dtype: "
     "experiments.precision sets it itself"),
    ("diversity", ["--dataset=frappe_x1", "--raw=/nowhere"], "experiments.diversity varies the "
     "synthetic generator: it runs on synthetic rows only, not frappe_x1"),
])
def test_a_key_the_runner_sets_itself_is_refused_by_name(tmp_path, entry, flags, says):
    proc = _run(entry, tmp_path / entry, *flags)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and says in lines[0], proc.stderr[-2000:]


def test_a_bars_config_names_the_dataset_for_the_runner(frappe, tmp_path):
    """--config=mlctr/configs/bars.py:frappe_x1 --data_dir=...: kind and protocol agree."""
    _, prepared = frappe
    config = bars.get_config("frappe_x1:peers=deepfm+dcn")
    given = datasets.given_keys(config, [])
    assert {"data.dataset", "data.protocol"} <= given
    datasets.configure(config, str(tmp_path), data_dir=prepared, given=given)
    assert (config.data.dataset, config.data.protocol, config.data.data_dir) == (
        "frappe_x1", "x1", prepared)
    with pytest.raises(datasets.DatasetChoiceError, match="config.data.dataset='criteo' and "
                       "--dataset='frappe_x1' disagree"):
        datasets.configure(bars.get_config("criteo"), str(tmp_path), choice="frappe_x1",
                           given=datasets.given_keys(bars.get_config("criteo"), []))
