"""Which dataset an experiment runner trains on: every kind `mlctr.data.prepare` knows.

`--dataset` picks a kind, `--raw` its raw file (or the directory of a csv dataset's
splits, or of criteo_1tb's day files), `--feature_spec` a csv dataset's columns, and
`--data_dir` an already prepared dataset (its feature_map.json then says the kind,
vocabulary mode and protocol). The same choices may come from the config instead
(`--config.data.dataset=frappe_x1 --config.data.data_dir=...`, or a config file such as
mlctr/configs/bars.py:frappe_x1): the runner respects every value the user gave and
fills only the ones left unset. Where two sources disagree (a flag and a config key, or
either and the prepared dataset's feature map) it stops with one line naming the key,
so a study never runs on other rows than the ones the user meant.

Kinds:
  synthetic                 generated Criteo-format rows (config.data.num_rows)
  shared_criteo / _avazu    the real Kaggle sample rows in ../shared/data
  criteo / avazu            a Kaggle raw file (BARS x4 protocol)
  criteo_1tb                the Criteo 1TB day files (--raw=the day_* directory)
  frappe_x1, movielens_x1,  a BARS x1 dataset: --raw=the directory of train.csv,
  criteo_x1, avazu_x1       valid.csv, test.csv
  csv                       a user's own csv splits, with --feature_spec=spec.json
Hashed vocabularies (`--config.vocab.mode=hash`) work with every kind; their prepared
dataset gets a directory of its own (<root>/data/<kind>_hash).
"""
from __future__ import annotations

import json
import os

import ml_collections

from mlctr import atomic
from mlctr.configs import default
from mlctr.data import bars_csv
from mlctr.data import layout
from mlctr.run import inputs

SHARED = ("shared_criteo", "shared_avazu")
BARS_X1 = tuple(bars_csv.FORMATS)
CHOICES = ("synthetic",) + SHARED + ("criteo", "avazu", "criteo_1tb") + BARS_X1 + ("csv",)
# The config keys a runner may set for the dataset: each is set only where the user left it.
KEYS = ("data.dataset", "data.raw", "data.data_dir", "data.protocol", "data.feature_spec",
        "vocab.mode")


class DatasetChoiceError(ValueError):
    """Flags, config and prepared dataset disagree, or a choice misses its input (one line)."""


def shared_data_dir() -> str:
    """<repo>/../shared/data, where the real Criteo/Avazu sample rows live."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(repo), "shared", "data")


def given_keys(config: ml_collections.ConfigDict, overrides) -> set[str]:
    """The KEYS the user set: overridden on the command line or set by the config file.

    Args:
      config: the runner's config (the --config file with its overrides applied).
      overrides: the dotted keys given as --config.<key>=... flags.
    """
    base = default.get_config()
    given = {key for key in KEYS if key in set(overrides)}
    for key in KEYS:
        if _get(config, key) != _get(base, key):
            given.add(key)
    return given


def _get(config, key: str):
    node = config
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def prepared_feature_map(data_dir: str) -> dict | None:
    """The feature map of the dataset prepared at `data_dir` (or its first process dir)."""
    if not data_dir:
        return None
    path = os.path.join(data_dir, layout.FEATURE_MAP)
    if not os.path.exists(path):
        counts = inputs.process_counts(data_dir)
        if not counts:
            return None
        path = os.path.join(inputs.process_dir(data_dir, 0, counts[0]), layout.FEATURE_MAP)
        if not os.path.exists(path):
            return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetChoiceError(f"{path}: unreadable feature map ({e})") from None


def _pick(key: str, flag: str, flag_value, config, given: set[str]):
    """The one value of `key` given by its flag or its config key (they may not differ)."""
    config_value = _get(config, key) if key in given else None
    if flag_value and config_value and flag_value != config_value:
        raise DatasetChoiceError(f"config.{key}={config_value!r} and --{flag}={flag_value!r} "
                                 "disagree: give one of them")
    return flag_value or config_value or ""


def _kind(choice: str) -> str:
    """The dataset kind prepare knows for a runner choice (shared_x: x)."""
    return choice.split("_", 1)[1] if choice in SHARED else choice


def configure(config: ml_collections.ConfigDict, root: str, *, choice: str = "", raw: str = "",
              data_dir: str = "", feature_spec: str = "", given: set[str] = frozenset()):
    """Points config.data (and config.vocab.mode) at the chosen dataset, in place.

    Args:
      config: the runner's (unlocked) config.
      root: the experiment root: an unprepared dataset goes to <root>/data/<choice>.
      choice: --dataset ('' : the config's, or the prepared dataset's, else synthetic).
      raw, data_dir, feature_spec: the flags of the same names ('' : not given).
      given: the KEYS the user set in the config (`given_keys`).

    Raises:
      DatasetChoiceError: one line naming the key or flag at fault.
    """
    if choice and choice not in CHOICES:
        raise DatasetChoiceError(f"--dataset={choice!r}: expected one of {', '.join(CHOICES)}")
    data_dir = _pick("data.data_dir", "data_dir", data_dir, config, given)
    data_dir = os.path.abspath(data_dir) if data_dir else ""
    recorded = prepared_feature_map(data_dir)
    if data_dir and recorded is None and not (choice or "data.dataset" in given):
        raise DatasetChoiceError(f"--data_dir={data_dir}: no prepared dataset there "
                                 "(feature_map.json); prepare it first or name --dataset")
    kind = _dataset_kind(choice, config, given, recorded, data_dir)
    choice = choice or kind
    raw = _pick("data.raw", "raw", raw, config, given)
    spec = _pick("data.feature_spec", "feature_spec", feature_spec, config, given)
    if choice in SHARED:
        if raw:
            raise DatasetChoiceError(f"--dataset={choice} reads ../shared/data; --raw "
                                     f"({raw}) is not for it")
        raw = _shared_raw(choice, root)
    if recorded is None and not data_dir:
        suffix = "_hash" if config.vocab.mode == "hash" else ""
        data_dir = os.path.join(os.path.abspath(root), "data", choice + suffix)
        recorded = prepared_feature_map(data_dir)
        if recorded is not None and recorded.get("dataset") != kind:
            raise DatasetChoiceError(f"{data_dir} holds a prepared {recorded.get('dataset')!r} "
                                     f"dataset, not {kind!r}: move it away")
    if recorded is None:
        _check_inputs(kind, raw, spec)
    else:
        _check_source(recorded, raw, data_dir)
        _check_synthetic_rows(recorded, config, data_dir)
    if recorded is not None:
        _adopt(config, "vocab.mode", recorded.get("vocab", {}).get("mode", "fit"), given,
               data_dir)
    _adopt(config, "data.protocol", _own_protocol(kind) if recorded is None else
           recorded.get("protocol"), given, data_dir)
    config.data.dataset = kind
    config.data.raw = raw
    config.data.data_dir = data_dir
    config.data.feature_spec = spec


def _dataset_kind(choice: str, config, given: set[str], recorded: dict | None,
                  data_dir: str) -> str:
    """The dataset kind of the flag, the config and the prepared dataset (all must agree)."""
    configured = config.data.dataset if "data.dataset" in given else ""
    kind = _kind(choice) if choice else ""
    if kind and configured and kind != configured:
        raise DatasetChoiceError(f"config.data.dataset={configured!r} and --dataset={choice!r} "
                                 "disagree: give one of them")
    kind = kind or configured
    if recorded is not None:
        if kind and kind != recorded.get("dataset"):
            source = f"--dataset={choice!r}" if choice else f"config.data.dataset={kind!r}"
            raise DatasetChoiceError(f"{source}, but {data_dir} holds a prepared "
                                     f"{recorded.get('dataset')!r} dataset: choose another "
                                     "--data_dir or --dataset")
        kind = recorded.get("dataset", "")
    return kind or "synthetic"


def _own_protocol(kind: str) -> str | None:
    """The protocol a dataset kind records in its feature map when it has its own."""
    return "x1" if kind in BARS_X1 else "csv" if kind == "csv" else None


def _adopt(config, key: str, value, given: set[str], data_dir: str) -> None:
    """Sets `key` to the dataset's own `value` unless the user gave another (then: error)."""
    if value is None:
        return
    section, name = key.split(".")
    if key in given and config[section][name] != value:
        raise DatasetChoiceError(f"config.{key}={config[section][name]!r}, but the dataset "
                                 f"{'at ' + data_dir + ' ' if data_dir else ''}has {value!r}: "
                                 f"drop the override or choose another dataset")
    config[section][name] = value


def _check_inputs(kind: str, raw: str, spec: str) -> None:
    """What an unprepared dataset of `kind` needs to be prepared from."""
    if kind != "synthetic" and not raw:
        what = ("the directory of its train.csv, valid.csv, test.csv"
                if kind in BARS_X1 + ("csv",) else
                "the directory of its day_* files" if kind == "criteo_1tb" else
                f"the Kaggle {kind} file")
        raise DatasetChoiceError(f"--dataset={kind} needs --raw: {what} (or --data_dir of a "
                                 "prepared dataset)")
    if kind == "csv" and not spec:
        raise DatasetChoiceError("--dataset=csv needs --feature_spec: the JSON file naming "
                                 "its label and feature columns (mlctr/data/bars_csv.py)")
    if spec and kind != "csv":
        raise DatasetChoiceError(f"--feature_spec is for --dataset=csv, not {kind}")


def _check_source(recorded: dict, raw: str, data_dir: str) -> None:
    """A prepared dataset found for `raw` must have been prepared from it."""
    if not raw:
        return
    source = recorded.get("source", {})
    if "directory" in source:
        same = os.path.abspath(raw) == os.path.abspath(source["directory"])
        was = source["directory"]
    elif "file" in source:
        same = os.path.basename(raw) == source["file"]
        was = source["file"]
    else:
        return
    if not same:
        raise DatasetChoiceError(f"{data_dir} holds a dataset prepared from {was}, not --raw "
                                 f"{raw}: choose another --data_dir (or move it away)")


def _check_synthetic_rows(recorded: dict, config, data_dir: str) -> None:
    """A prepared synthetic dataset must have the rows config.data.num_rows asks for."""
    rows = recorded.get("synthetic", {}).get("spec", {}).get("num_rows")
    if rows is not None and rows != config.data.num_rows:
        raise DatasetChoiceError(f"config.data.num_rows={config.data.num_rows}, but {data_dir} "
                                 f"holds {rows:,} synthetic rows: choose another --data_dir "
                                 "(or --pretrain_root) or drop the override")


def _shared_raw(choice: str, root: str) -> str:
    """The shared rows of `choice` concatenated into <root>/data/raw (once)."""
    name = _kind(choice)
    source = os.path.join(shared_data_dir(), name)
    if not os.path.isdir(source):
        raise DatasetChoiceError(f"--dataset={choice}: the real {name} rows are not at {source}")
    raw = os.path.join(os.path.abspath(root), "data", "raw",
                       f"{choice}.{'txt' if name == 'criteo' else 'csv'}")
    if not os.path.exists(raw):
        _concatenate_shared(name, source, raw)
    return raw


def _concatenate_shared(name: str, source: str, raw: str):
    """Concatenates the shared raw files of `name` into `raw` (Avazu: one header)."""
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    files = sorted(f for f in os.listdir(source) if f.endswith((".txt", ".csv")))
    with atomic.replacing(raw, "wb") as out:  # a fresh temporary: no planted link followed
        for k, fname in enumerate(files):
            with open(os.path.join(source, fname), "rb") as f:
                lines = f.read().splitlines(keepends=True)
            if name == "avazu" and k > 0:
                lines = lines[1:]
            out.writelines(lines)
