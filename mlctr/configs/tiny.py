"""Test-sized config: tiny models, batch 64, 4000 synthetic rows, one epoch.

For smoke tests and quick checks of a pipeline only; never report its numbers.
  python -m mlctr.main --config=mlctr/configs/tiny.py --workdir=/tmp/tiny
"""
import ml_collections

from mlctr.configs import default

TINY_MODEL = dict(embedding_dim=4, dnn_hidden_units=(16, 16), net_dropout=0.0, batch_norm=False,
                  embedding_regularizer=1e-5, net_regularizer=0.0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config(arg)
    with config.unlocked():
        config.data.num_rows = 4000
        for key in config.models:
            arch = config.models[key].get("model", key)
            if "dnn_hidden_units" in config.models[key] and arch != "autoint":
                # Only the fields the set has (MaskNet has no batch_norm).
                config.models[key].update({k: v for k, v in TINY_MODEL.items()
                                           if k in config.models[key]})
            if arch == "dcnv2":
                config.models[key].parallel_dnn_hidden_units = (16,)
            if "embedding_dim" in config.models[key]:
                config.models[key].embedding_dim = 4
            if "num_cross_layers" in config.models[key]:
                config.models[key].num_cross_layers = 2
            if "cin_hidden_units" in config.models[key]:
                config.models[key].cin_hidden_units = (8,)
            if arch == "masknet":
                config.models[key].parallel_block_dim = 8
            if arch == "autoint":
                config.models[key].attention_dim = 4
        config.train.batch_size = 64
        config.train.eval_batch_size = 256
        config.train.num_epochs = 1
        config.train.eval_steps = 0       # at the end of the epoch
        config.train.log_steps = 10
        config.finetune.num_epochs = 1
        config.finetune.eval_steps = 39
    return config
