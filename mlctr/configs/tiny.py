"""Test-sized config: tiny models, batch 64, 4000 synthetic rows, one epoch.

For smoke tests and quick checks of a pipeline only; never report its numbers.
  python -m mlctr.main --config=mlctr/configs/tiny.py --workdir=/tmp/tiny
The argument is default.py's (`tiny.py:peers=deepfm*2`).
"""
import ml_collections

from mlctr.configs import default

_DNN = dict(embedding_dim=4, dnn_hidden_units=(16, 16), net_dropout=0.0, batch_norm=False,
            embedding_regularizer=1e-5, net_regularizer=0.0)


def model_sets() -> ml_collections.ConfigDict:
    """A tiny set for every key of default.model_sets() (embedding 4, DNN 16x16)."""
    return ml_collections.ConfigDict({
        "lr": dict(model="lr", embedding_regularizer=1e-5),
        "fm": dict(model="fm", embedding_dim=4, embedding_regularizer=1e-5),
        "deepfm": dict(model="deepfm", **_DNN),
        "dcn": dict(model="dcn", num_cross_layers=2, **_DNN),
        "ipnn": dict(model="pnn", product_type="inner", **_DNN),
        "opnn": dict(model="pnn", product_type="outer", **_DNN),
        "fibinet": dict(model="fibinet", reduction_ratio=3, bilinear_type="field_interaction",
                        **_DNN),
        "wide_deep": dict(model="wide_deep", **_DNN),
        "dcnv2": dict(model="dcnv2", model_structure="parallel", num_cross_layers=2,
                      parallel_dnn_hidden_units=(16,), stacked_dnn_hidden_units=(),
                      embedding_dim=4, net_dropout=0.0, batch_norm=False,
                      embedding_regularizer=1e-5, net_regularizer=0.0),
        "xdeepfm": dict(model="xdeepfm", cin_hidden_units=(8,), **_DNN),
        "autoint": dict(model="autoint", embedding_dim=4, attention_layers=2, num_heads=2,
                        attention_dim=4, use_residual=True, dnn_hidden_units=(),
                        net_dropout=0.0, batch_norm=False, embedding_regularizer=1e-5,
                        net_regularizer=0.0),
        "deepfm_small": dict(model="deepfm", **_DNN),
    })


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """default.py (with its argument) at test size."""
    config = default.get_config(arg)
    with config.unlocked():
        config.data.num_rows = 4000
        config.models = model_sets()
        config.train.batch_size = 64
        config.train.eval_batch_size = 256
        config.train.num_epochs = 1
        config.train.eval_steps = 0       # at the end of the epoch
        config.train.log_steps = 10
        config.finetune.num_epochs = 1
        config.finetune.eval_steps = 39
    return config
