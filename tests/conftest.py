"""Fixtures shared by the trainer-level tests: a tiny prepared dataset and config."""
import os

import pytest

from mlctr.configs import default

# Compiled steps are reused across test runs (CI reruns, local iterations).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/mlctr/xla-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

TINY_MODEL = dict(embedding_dim=4, dnn_hidden_units=(16, 16), net_dropout=0.0, batch_norm=False,
                  embedding_regularizer=1e-5, net_regularizer=0.0)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A prepared 4000-row synthetic Criteo-format dataset (3200 / 400 / 400 rows)."""
    from mlctr.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny_synthetic")
    out = str(root / "prepared")
    prepare("synthetic", str(root / "raw" / "synthetic.txt"), out, num_rows=4000, seed=11)
    return out


def make_tiny_config(data_dir: str, peers: str = "deepfm,dcn", **train_overrides):
    """The default config shrunk to test size (tiny models, batch 64)."""
    config = default.get_config()
    with config.unlocked():
        config.mode = "train"
        config.data.data_dir = data_dir
        config.peers = peers
        for key in config.models:
            arch = config.models[key].get("model", key)
            extra = {"num_cross_layers": 2} if arch in ("dcn", "dcnv2") else {}
            if arch in ("deepfm", "dcn", "pnn", "fibinet"):
                config.models[key].update(dict(TINY_MODEL, **extra))
        config.train.batch_size = 64
        config.train.eval_batch_size = 256
        config.train.num_epochs = 1
        config.train.log_steps = 10
        config.train.update(train_overrides)
        config.finetune.num_epochs = 1
    config.lock()
    return config


@pytest.fixture
def tiny_config(tiny_data_dir):
    return lambda **kw: make_tiny_config(tiny_data_dir, **kw)
