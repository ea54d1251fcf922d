"""The configs: every model set builds, misspelled keys fail loudly."""
import json
import os
import subprocess
import sys

import pytest

from mlctr import peer_groups
from mlctr.configs import bars, bars_datasets, bars_table, default, tiny, validate
from mlctr.run import resume

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("get_config", [default.get_config, tiny.get_config])
def test_every_model_set_builds(get_config):
    config = get_config()
    peers = peer_groups.build_peers(",".join(config.models), config.models, vocab_size=50, num_fields=3)
    assert len(peers.names) == len(config.models)
    assert config.peers == "deepfm,dcn,ipnn,fibinet"


def test_config_is_locked_and_peers_argument():
    config = default.get_config("peers=deepfm*4")
    assert peer_groups.parse_peer_spec(config.peers) == ["deepfm"] * 4
    with pytest.raises(AttributeError):
        config.mutual.alpah = 0.5
    with pytest.raises(ValueError, match="peers=SPEC"):
        default.get_config("peer=deepfm")


def test_config_arguments_share_one_convention():
    assert bars.get_config("avazu").data.dataset == "avazu"
    config = bars.get_config("dataset=avazu:peers=deepfm*2")
    assert config.data.dataset == "avazu" and config.peers == "deepfm*2"
    assert tiny.get_config("peers=dcn").peers == "dcn"
    assert default.get_config("deepfm+dcn").peers == "deepfm+dcn"  # a bare value: peers
    for bad in ("peers=a:peers=b", "colour=red", "peers="):
        with pytest.raises(ValueError, match="default.py: bad config argument"):
            default.get_config(bad)
    with pytest.raises(ValueError, match="bars.py: dataset must be one of criteo_x4_001"):
        bars.get_config("frappe")


@pytest.mark.parametrize("name", list(bars_datasets.DATASETS))
def test_bars_config_for_every_bars_dataset(name):
    """bars.py:<dataset> runs for every BARS dataset; each model set says its source."""
    config = bars.get_config(f"{name}:peers=deepfm+dcn")
    kind, protocol, monitor = bars_datasets.DATASETS[name]
    assert (config.data.dataset, config.data.protocol, config.train.monitor) == (
        kind, protocol, monitor)
    validate.validate(config)
    for key in bars_datasets.MODELS:
        values, source = bars_datasets.hparams(key, name)
        assert {k: v for k, v in config.models[key].items() if k != "model"} == values
        tuned = bars_table.has_run(bars_datasets.MODELS[key], name)
        assert source.startswith("BARS " if tuned else "stand-in: ")
        if name.endswith("x4_002") and "embedding_dim" in values:
            # BARS.md: x4_002 embeds in 40 dims (BARS's ONN runs: 2, F embeddings per id)
            assert values["embedding_dim"] == (2 if key == "onn" else 40)
    if bars_table.has_run("fibinet", name):  # the tuned sets are BARS's, value for value
        assert dict(config.models.fibinet) == dict(
            model="fibinet", **bars_table.bars_hparams("fibinet", name))


def test_bars_configs_carry_the_runs_own_patience():
    """BARS ran IPNN on Frappe_x1 with patience 3 (the others 2): the config says so per
    peer, and only for the peers it trains."""
    config = bars.get_config("frappe_x1")
    assert config.train.peer_schedule == "ipnn:patience=3"
    validate.validate(config)
    assert bars.get_config("frappe_x1:peers=deepfm+dcn").train.peer_schedule == ""
    assert bars.get_config("criteo_x4_001").train.peer_schedule == ""


def test_readme_has_the_bars_table():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert bars_datasets.markdown_table() in f.read()


def test_tiny_has_a_set_for_every_default_model_set():
    assert sorted(tiny.model_sets()) == sorted(default.model_sets())
    for key, tiny_set in tiny.model_sets().items():
        assert tiny_set.model == default.model_sets()[key].model


def test_misspelled_override_fails_on_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mlctr.main", "--config=mlctr/configs/tiny.py",
         f"--workdir={tmp_path}", "--config.mutual.alpah=0.5"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode != 0
    assert "alpah" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "mlctr: error: no such config key 'alpah'" in proc.stderr
    assert not os.path.exists(tmp_path / "config.json")


@pytest.mark.parametrize("dataset", ["criteo", "avazu"])
def test_bars_configs_build_every_model(dataset):
    config = bars.get_config(dataset)
    assert config.train.batch_size == 10000 and config.data.dataset == dataset
    peers = peer_groups.build_peers(",".join(config.models), config.models, vocab_size=50, num_fields=3)
    assert "fibinet" in peers.names


@pytest.mark.parametrize("get_config", [default.get_config, tiny.get_config,
                                        lambda: bars.get_config("criteo"),
                                        lambda: bars.get_config("avazu")])
def test_validate_accepts_the_shipped_configs(get_config):
    validate.validate(get_config())


@pytest.mark.parametrize("key,value,says", [
    ("train.batch_size", -5, "must be an integer > 0"),
    ("train.batch_size", 0, "must be an integer > 0"),
    ("train.num_epochs", 0, "must be an integer > 0"),
    ("train.max_steps", -1, ">= 0"),
    ("train.eval_batch_size", 0, "> 0"),
    ("train.eval_steps", -3, ">= 0"),
    ("train.log_steps", 0, "> 0"),
    ("train.patience", 0, ">= 1"),
    ("train.monitor", "accuracy", "must be one of"),
    ("checkpoint.ckpt_steps", -1, ">= 0"),
    ("checkpoint.keep", 0, ">= 1"),
    ("mutual.alpha", -1.0, ">= 0"),
    ("mutual.alpha", float("nan"), "finite"),
    ("mutual.divergence", "js", "must be one of"),
    ("mutual.warmup_steps", -1, ">= 0"),
    ("mutual.peer_execution", "pmap", "must be one of"),
    ("optimizer.learning_rate", 0.0, "> 0"),
    ("optimizer.lr_decay_factor", 0.0, "(0, 1]"),
    ("optimizer.lr_decay_factor", 1.5, "(0, 1]"),
    ("optimizer.b2", 1.0, "[0, 1)"),
    ("optimizer.embedding_optimizer", "adam", "must be one of"),
    ("finetune.learning_rate", -1e-4, "> 0"),
    ("finetune.patience", 0, ">= 1"),
    ("finetune.num_epochs", 0, "> 0"),
    ("mode", "pretrain", "must be one of"),
    ("data.dataset", "kdd12", "must be one of"),
    ("data.protocol", "x9", "must be one of"),
    ("data.protocol", "x1", "is that of the csv datasets"),
    ("mesh.data", 0, "-1"),
    ("compute_dtype", "int8", "must be one of"),
    ("vocab.qr_collisions", 1, "0 (off) or an integer >= 2"),
    ("vocab.qr_collisions", -4, "0 (off) or an integer >= 2"),
    ("vocab.qr_combiner", "concat", "must be one of"),
])
def test_validate_names_the_key_and_value(key, value, says):
    config = tiny.get_config()
    section, _, field = key.rpartition(".")
    (config[section] if section else config)[field] = value
    with pytest.raises(ValueError) as e:
        validate.validate(config)
    message = str(e.value)
    assert message.startswith(f"config.{key}: ") and "\n" not in message
    assert says in message and f"(got {value!r})" in message


@pytest.mark.parametrize("peers,says", [
    ("", "no peers"),
    (" , ", "no peers"),
    ("deepfm*0", "COUNT >= 1"),
    ("deepfm*x", "COUNT >= 1"),
    ("deepfm,transformer", "'transformer' has no hyperparameter set"),
])
def test_validate_peer_spec(peers, says):
    config = tiny.get_config()
    config.peers = peers
    with pytest.raises(ValueError, match=r"^config\.peers: ") as e:
        validate.validate(config)
    assert says in str(e.value)


def test_validate_frozen_peers_and_min_learning_rate():
    config = tiny.get_config("peers=deepfm*2")
    config.mutual.frozen_peers = "deepfm_0"
    validate.validate(config)  # one teacher, one student: fine
    config.mutual.frozen_peers = "deepfm"
    with pytest.raises(ValueError, match=r"^config\.mutual\.frozen_peers: names unknown"):
        validate.validate(config)
    config.mutual.frozen_peers = "deepfm_0,deepfm_1"
    with pytest.raises(ValueError, match="freezes every peer"):
        validate.validate(config)
    config.mutual.frozen_peers = ""
    config.optimizer.min_learning_rate = 1.0
    with pytest.raises(ValueError, match=r"^config\.optimizer\.min_learning_rate: must not"):
        validate.validate(config)


def test_validate_synthetic_needs_rows():
    config = tiny.get_config()
    config.data.num_rows = 0
    with pytest.raises(ValueError, match=r"^config\.data\.num_rows: "):
        validate.validate(config)


def test_qr_keys_accept_their_range_and_absent_keys_match_old_checkpoints():
    config = tiny.get_config()
    for collisions, combiner in [(0, "product"), (2, "sum"), (1000, "product")]:
        config.vocab.qr_collisions, config.vocab.qr_combiner = collisions, combiner
        validate.validate(config)
    # A run saved before the keys existed resumes under a config that has them at default...
    current = tiny.get_config().to_dict()
    saved = json.loads(json.dumps(current))  # as config.json holds it
    del saved["vocab"]["qr_collisions"], saved["vocab"]["qr_combiner"]
    assert resume.config_differences(saved, current) == []
    # ...but not with QR switched on.
    current["vocab"]["qr_collisions"] = 4
    assert resume.config_differences(saved, current) == [
        "vocab.qr_collisions: checkpoint '<absent>', config 4"]


@pytest.mark.parametrize("dataset,protocol,ok", [
    ("frappe_x1", "x1", True), ("frappe_x1", "x4_001", True), ("csv", "csv", True),
    ("criteo", "x4_002", True), ("frappe_x1", "x4_002", False), ("csv", "x1", False),
    ("movielens_x1", "csv", False), ("avazu", "x1", False)])
def test_protocol_fits_the_dataset_kind(dataset, protocol, ok):
    """x1 is accepted for the BARS x1 sets (their feature map records it), refused elsewhere."""
    config = tiny.get_config()
    config.data.dataset = dataset
    config.data.protocol = protocol
    if ok:
        validate.validate(config)
    else:
        with pytest.raises(ValueError, match=r"^config\.data\.protocol: .*\(got '"):
            validate.validate(config)


def test_ektf_is_a_transfer_and_the_old_divergence_key_is_refused_in_one_line():
    config = tiny.get_config()
    with config.unlocked():
        config.mutual.transfer = "ektf"
    validate.validate(config)
    with config.unlocked():
        config.mutual.transfer, config.mutual.divergence = "pairwise", "ektf"
    with pytest.raises(ValueError) as error:
        validate.validate(config)
    assert str(error.value).startswith("config.mutual.divergence: must be one of ('mse', 'kl')")
    assert "config.mutual.transfer='ektf'" in str(error.value) and "\n" not in str(error.value)
