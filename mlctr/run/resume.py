"""What a checkpoint must agree with for a run to resume from it: the config, but for the
fields a resume may change (`RESUMABLE_FIELDS`); `config_differences` lists the others
that differ, and `table_padding_difference` a `mesh.table` change that pads the tables
otherwise."""
from __future__ import annotations

import json

from mlctr import sharding
from mlctr.configs import default


# Config fields that may change when a run resumes: how long to train, how to log and
# evaluate, where the data lives and how the work is laid out on devices. Any other
# difference means a different training run, and resuming refuses it.
RESUMABLE_FIELDS = ("train.num_epochs", "train.max_steps", "train.log_steps",
                    "train.eval_batch_size", "train.test_at_end", "data.data_dir", "data.raw",
                    "mutual.peer_execution", "mesh.", "checkpoint.")


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _default_config() -> dict:
    return _flatten(json.loads(json.dumps(default.get_config().to_dict())))


def table_padding_difference(saved: dict, current: dict, vocab_size) -> list[str]:
    """mesh.table may change on resume only where it keeps the tables' padded row count
    (peer_groups.build_peers pads each table to a multiple of mesh.table)."""
    before = int(saved.get("mesh", {}).get("table", 1))
    after = int(current.get("mesh", {}).get("table", 1))
    if before == after or not vocab_size:
        return []
    rows = [sharding.padded_table_rows(vocab_size, t) for t in (before, after)]
    if rows[0] == rows[1]:
        return []
    return [f"mesh.table: checkpoint {before}, config {after} (embedding tables of "
            f"{rows[0]} vs {rows[1]} padded rows)"]


def config_differences(saved: dict, current: dict) -> list[str]:
    """Dotted config keys whose values differ (outside RESUMABLE_FIELDS), with both values.

    A key the saved config lacks is no difference while the current value is the
    key's default in mlctr/configs/default.py: the run predates the key, and a key is
    only ever added with a default that keeps the old behaviour.
    """
    saved, current = _flatten(saved), _flatten(json.loads(json.dumps(current)))
    defaults = None
    differences = []
    for key in sorted(set(saved) | set(current)):
        if any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUMABLE_FIELDS):
            continue
        if key not in saved and key in current:
            defaults = _default_config() if defaults is None else defaults
            if key in defaults and defaults[key] == current[key]:
                continue
        if saved.get(key, "<absent>") != current.get(key, "<absent>"):
            differences.append(f"{key}: checkpoint {saved.get(key, '<absent>')!r}, "
                               f"config {current.get(key, '<absent>')!r}")
    return differences
