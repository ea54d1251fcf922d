"""BARS configs: the published hyperparameters of every model on every BARS dataset.

  python -m mlctr.main --config=mlctr/configs/bars.py:criteo \
      --config.data.raw=/data/criteo/train.txt --workdir=runs/criteo_x4_001
  python -m mlctr.main --config=mlctr/configs/bars.py:avazu:peers=deepfm+dcn \
      --config.data.raw=/data/avazu/train.gz --workdir=runs/avazu_x4_001
  python -m mlctr.main --config=mlctr/configs/bars.py:frappe_x1 \
      --config.data.raw=/data/Frappe_x1 --workdir=runs/frappe_x1
  python -m experiments.finetune --config=mlctr/configs/bars.py:frappe_x1 \
      --data_dir=data/frappe_x1 --workdir=runs/frappe_x1_finetune

The argument (mlctr.configs.args): `dataset=NAME` (a bare value is the dataset) and
`peers=SPEC` (default: the paper's four). NAME is a BARS dataset: criteo_x4_001,
criteo_x4_002, avazu_x4_001, avazu_x4_002, criteo_x1, avazu_x1, frappe_x1, movielens_x1
(MovielensLatest_x1); `criteo` / `avazu` are their x4_001. Model sets and their sources
are mlctr/configs/bars_datasets.py: BARS's tuned set of every model BARS ran on the dataset,
a declared stand-in for the others (the README's BARS table says which, with the published
test AUCs).
The protocol is BARS's: Adam 1e-3, lr x0.1 on plateau, patience 2, evaluate every epoch,
up to 100 epochs (early stopping ends it), monitor AUC − logloss (x4) or AUC (x1), batch
10000 (x4) or 4096 (x1): the size most of the dataset's BARS runs used.
Expected runtime: hours per dataset on one GPU (x4: 36.7M / 32.3M train rows); test AUC
about the published one beside each model in README.md.
"""
import ml_collections

from mlctr.configs import args, bars_datasets, bars_table, default

ARG_KEYS = {"dataset": "|".join(bars_datasets.DATASETS) + "|criteo|avazu", **default.ARG_KEYS}


def get_config(arg: str = "criteo") -> ml_collections.ConfigDict:
    """The BARS config of the dataset `arg` names (criteo_x4_001 by default)."""
    options = args.parse(arg, "mlctr/configs/bars.py", ARG_KEYS)
    name = bars_datasets.resolve(options.pop("dataset", "criteo"))
    dataset, protocol, monitor = bars_datasets.DATASETS[name]
    config = default.get_config(":".join(f"{k}={v}" for k, v in options.items()))
    with config.unlocked():
        config.data.dataset = dataset
        config.data.protocol = protocol
        config.data.num_rows = 0
        config.models = ml_collections.ConfigDict({
            key: dict(model=arch, **bars_datasets.hparams(key, name)[0])
            for key, arch in bars_datasets.MODELS.items()})
        config.train.batch_size = bars_datasets.batch_size(name)
        config.train.peer_schedule = bars_datasets.peer_schedule(name, config.peers)
        config.train.eval_batch_size = 50_000
        config.train.num_epochs = 100
        config.train.monitor = monitor
        config.train.log_steps = 500
        config.finetune.eval_steps = 0
    return config
