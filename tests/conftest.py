"""Fixtures shared by the trainer-level tests: a tiny prepared dataset and config."""
import os

import pytest

# Compiled steps are reused across test runs (CI reruns, local iterations).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/mlctr/xla-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

from mlctr.configs import tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A prepared 4000-row synthetic Criteo-format dataset (about 3200 / 400 / 400 rows)."""
    from mlctr.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny_synthetic")
    out = str(root / "prepared")
    prepare("synthetic", str(root / "raw" / "synthetic.txt"), out, num_rows=4000, seed=11)
    return out


def make_tiny_config(data_dir: str, peers: str = "deepfm,dcn", **train_overrides):
    """mlctr/configs/tiny.py on the tiny dataset, mode 'train', locked."""
    config = tiny.get_config()
    with config.unlocked():
        config.mode = "train"
        config.data.data_dir = data_dir
        config.peers = peers
        config.train.update(train_overrides)
    config.lock()
    return config


@pytest.fixture
def tiny_config(tiny_data_dir):
    return lambda **kw: make_tiny_config(tiny_data_dir, **kw)
