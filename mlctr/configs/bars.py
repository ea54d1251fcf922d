"""BARS x4_001 configs: the published hyperparameters of every model, for GPU/TPU runs.

  python -m mlctr.main --config=mlctr/configs/bars.py:criteo \
      --config.data.raw=/data/criteo/train.txt --workdir=runs/criteo_x4_001
  python -m mlctr.main --config=mlctr/configs/bars.py:avazu:peers=deepfm+dcn \
      --config.data.raw=/data/avazu/train.gz --workdir=runs/avazu_x4_001

The argument (mlctr.configs.args): `dataset=criteo|avazu` (a bare value is the
dataset) and `peers=SPEC` (default: the paper's four). Model sets are
`mlctr.configs.bars_table.bars_hparams(model, 'criteo_x4_001' | 'avazu_x4_001')`; the
protocol is BARS's: batch 10000, Adam 1e-3, lr x0.1 on plateau, patience 2, evaluate
every epoch, up to 100 epochs (early stopping ends it), monitor AUC − logloss as the x4
runs do. Published test AUCs to compare with are in README.md.
"""
import ml_collections

from mlctr.configs import args, bars_table, default

ARG_KEYS = {"dataset": "criteo|avazu", **default.ARG_KEYS}
# Peer key -> registered model of the BARS sets.
_MODELS = {"lr": "lr", "fm": "fm", "deepfm": "deepfm", "dcn": "dcn", "ipnn": "pnn",
           "fibinet": "fibinet", "wide_deep": "wide_deep", "dcnv2": "dcnv2",
           "xdeepfm": "xdeepfm", "autoint": "autoint"}


def get_config(arg: str = "criteo") -> ml_collections.ConfigDict:
    """The BARS x4_001 config of the dataset `arg` names (criteo by default)."""
    options = args.parse(arg, "mlctr/configs/bars.py", ARG_KEYS)
    name = options.pop("dataset", "criteo")
    if name not in ("criteo", "avazu"):
        raise ValueError(f"mlctr/configs/bars.py: dataset must be 'criteo' or 'avazu', got "
                         f"{name!r}")
    config = default.get_config(":".join(f"{k}={v}" for k, v in options.items()))
    dataset = f"{name}_x4_001"
    with config.unlocked():
        config.data.dataset = name
        config.data.protocol = "x4_001"
        config.data.num_rows = 0
        config.models = ml_collections.ConfigDict({
            key: dict(model=arch, **bars_table.bars_hparams(key, dataset))
            for key, arch in _MODELS.items()})
        config.train.batch_size = bars_table.BARS_BATCH_SIZE
        config.train.eval_batch_size = 50_000
        config.train.num_epochs = 100
        config.train.monitor = "auc-logloss"
        config.train.log_steps = 500
        config.finetune.eval_steps = 0
    return config
