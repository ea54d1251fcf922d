"""Per-peer schedule settings (`train.peer_schedule`): parsed, validated, applied."""
import pytest

from mlctr import study
from mlctr.configs import default
from mlctr.configs import validate
from mlctr.configs import peer_schedule
from mlctr.run import schedule


def _config(spec: str, peers: str = "deepfm,ipnn,deepfm_small*2"):
    config = default.get_config(f"peers={peers}")
    with config.unlocked():
        config.train.peer_schedule = spec
    return config


def test_overrides_by_peer_and_by_model_set_the_peer_winning():
    config = _config("ipnn:patience=3,lr_decay_factor=0.5; deepfm_small:learning_rate=5e-4;"
                     "deepfm_small_1:learning_rate=2e-4,min_learning_rate=1e-5")
    validate.validate(config)
    names = ["deepfm", "ipnn", "deepfm_small_0", "deepfm_small_1"]
    keys = ["deepfm", "ipnn", "deepfm_small", "deepfm_small"]
    settings = peer_schedule.peer_settings(config, names, keys)
    assert settings.patience == (2, 3, 2, 2)
    assert settings.lr_decay_factor == (0.1, 0.5, 0.1, 0.1)
    assert settings.learning_rate == (1e-3, 1e-3, 5e-4, 2e-4)
    assert settings.min_learning_rate == (1e-6, 1e-6, 1e-6, 1e-5)


def test_per_peer_patience_and_decay_in_the_schedule():
    sched = schedule.PeerSchedule.start(2, [1e-3, 2e-3])
    for step, values in enumerate([[0.7, 0.7], [0.6, 0.6], [0.6, 0.6]], 1):
        _, stopped = sched.update(values, step, patience=[1, 3], decay=[0.1, 0.5],
                                  min_lr=[1e-6, 1e-6])
        if step == 2:
            assert stopped == [True, False]
    assert sched.stopped == [True, False] and sched.bad_evals == [1, 2]
    assert sched.learning_rate == pytest.approx([1e-4, 5e-4])


@pytest.mark.parametrize("spec, fragment", [
    ("ipnn:patience=0", "patience=0"),
    ("ipnn:patience=2.5", "patience=2.5"),
    ("ipnn:lr_decay_factor=1.5", "lr_decay_factor=1.5"),
    ("ipnn:learning_rate=abc", "learning_rate='abc'"),
    ("ipnn:momentum=0.5", "unknown setting 'momentum'"),
    ("ipnn=3", "is not PEER:SETTING=VALUE"),
    ("ipnn:patience=3;ipnn:patience=4", "appears twice"),
    ("pnn:patience=3", "unknown peer(s) ['pnn']"),
    ("ipnn:min_learning_rate=0.01", "exceeds its learning_rate"),
])
def test_bad_peer_schedule_fails_with_one_line_naming_the_key(spec, fragment):
    with pytest.raises(ValueError) as error:
        validate.validate(_config(spec, peers="deepfm,ipnn"))
    message = str(error.value)
    assert message.startswith("config.train.peer_schedule: ") and "\n" not in message
    assert fragment in message


def test_finetune_peer_schedule_is_validated_and_applied():
    config = default.get_config("peers=deepfm,ipnn")
    with config.unlocked():
        config.finetune.peer_schedule = "ipnx:patience=3"
    with pytest.raises(ValueError, match=r"^config.finetune.peer_schedule: names unknown"):
        validate.validate(config)
    with config.unlocked():
        config.finetune.peer_schedule = "ipnn:patience=3"
        config.train.peer_schedule = "ipnn:patience=5"
    finetune = study.finetune_config(config, "/pretrained", 1.0)
    assert finetune.train.peer_schedule == "ipnn:patience=3"
