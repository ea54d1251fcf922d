"""The tiny training config the trainer tests share (tests/conftest.py's fixtures use it).

A module of its own, not conftest: `from conftest import ...` in a test module would find
whichever conftest.py pytest imported first (tests/data/ has one too).
"""
from mlctr.configs import tiny


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
