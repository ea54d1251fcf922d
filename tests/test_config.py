"""The configs: every model set builds, misspelled keys fail loudly."""
import os
import subprocess
import sys

import pytest

from mlctr import mutual
from mlctr.configs import bars, default, tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("get_config", [default.get_config, tiny.get_config])
def test_every_model_set_builds(get_config):
    config = get_config()
    peers = mutual.build_peers(",".join(config.models), config.models, vocab_size=50, num_fields=3)
    assert len(peers.names) == len(config.models)
    assert config.peers == "deepfm,dcn,ipnn,fibinet"


def test_config_is_locked_and_peers_argument():
    config = default.get_config("peers=deepfm*4")
    assert mutual.parse_peer_spec(config.peers) == ["deepfm"] * 4
    with pytest.raises(AttributeError):
        config.mutual.alpah = 0.5
    with pytest.raises(ValueError, match="peers=SPEC"):
        default.get_config("peer=deepfm")


def test_misspelled_override_fails_on_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mlctr.main", "--config=mlctr/configs/tiny.py",
         f"--workdir={tmp_path}", "--config.mutual.alpah=0.5"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode != 0
    assert "alpah" in proc.stderr
    assert not os.path.exists(tmp_path / "config.json")


@pytest.mark.parametrize("dataset", ["criteo", "avazu"])
def test_bars_configs_build_every_model(dataset):
    config = bars.get_config(dataset)
    assert config.train.batch_size == 10000 and config.data.dataset == dataset
    peers = mutual.build_peers(",".join(config.models), config.models, vocab_size=50, num_fields=3)
    assert "fibinet" in peers.names
