"""BARS x4_001 configs: the published hyperparameters of every model, for GPU/TPU runs.

  python -m mlctr.main --config=mlctr/configs/bars.py:criteo \
      --config.data.raw=/data/criteo/train.txt --workdir=runs/criteo_x4_001
  python -m mlctr.main --config=mlctr/configs/bars.py:avazu \
      --config.data.raw=/data/avazu/train.gz --workdir=runs/avazu_x4_001

Model sets are `mlctr.models.bars_configs.bars_hparams(model, 'criteo_x4_001' |
'avazu_x4_001')`; the protocol is BARS's: batch 10000, Adam 1e-3, lr x0.1 on plateau,
patience 2, evaluate every epoch, up to 100 epochs (early stopping ends it), monitor
AUC − logloss as the x4 runs do. Published test AUCs to compare with are in README.md.
Peers default to the paper's four; `--config=mlctr/configs/bars.py:criteo` then
`--config.peers=...` to change them.
"""
import ml_collections

from mlctr.configs import default
from mlctr.models import bars_configs

_MODELS = {"lr": "lr", "fm": "fm", "deepfm": "deepfm", "dcn": "dcn", "ipnn": "pnn",
           "fibinet": "fibinet", "wide_deep": "wide_deep", "dcnv2": "dcnv2",
           "xdeepfm": "xdeepfm", "autoint": "autoint", "finalmlp": "finalmlp",
           "finalnet": "finalnet", "dcnv3": "dcnv3"}


def get_config(arg: str = "criteo") -> ml_collections.ConfigDict:
    if arg not in ("criteo", "avazu"):
        raise ValueError(f"bars.py takes 'criteo' or 'avazu', got {arg!r}")
    config = default.get_config()
    dataset = f"{arg}_x4_001"
    with config.unlocked():
        config.data.dataset = arg
        config.data.protocol = "x4_001"
        config.data.num_rows = 0
        config.models = ml_collections.ConfigDict({
            key: dict(model=arch, **bars_configs.bars_hparams(key, dataset))
            for key, arch in _MODELS.items()})
        config.train.batch_size = bars_configs.BARS_BATCH_SIZE
        config.train.eval_batch_size = 50_000
        config.train.num_epochs = 100
        config.train.monitor = "auc-logloss"
        config.train.log_steps = 500
        config.finetune.eval_steps = 0
    return config
