"""BARS hyperparameters (x4_001 settings: embedding 16, batch 10000) per model and dataset:
the table `BARS` (model -> dataset -> hyperparameters), a plain dict to extend with a
model or a dataset, and `bars_hparams` to read it.

Source: the reczoo/BARS benchmark, ``ranking/ctr/<Model>/<Model>_<dataset>/README.md`` -- the
parameter block logged by the run whose test result BARS reports. Every value below was read
from those logs (FuxiCTR v1.0.2 runs, DCNv2 Criteo from FuxiCTR v2.2.0, DCNv2 Avazu from
v1.1.1), except where a comment says otherwise. Name mapping from FuxiCTR/BARS:
``hidden_units`` -> ``dnn_hidden_units``; ``cin_layer_units`` -> ``cin_hidden_units``;
LR/FM's single ``regularizer`` -> both ``embedding_regularizer`` and ``net_regularizer``.

Models whose BARS defaults equal the model class defaults (Criteo_x4_001) still list every
value here so a config never depends on class defaults. The training protocol (Adam 1e-3,
batch 10000, lr x0.1 on plateau, patience 2) lives in the trainer config, not here.
"""

from typing import Any

BARS_BATCH_SIZE = 10000
DATASETS = ('criteo_x4_001', 'avazu_x4_001')

BARS: dict[str, dict[str, dict[str, Any]]] = {
    'lr': {
        'criteo_x4_001': dict(embedding_regularizer=1e-7, net_regularizer=1e-7),
        'avazu_x4_001': dict(embedding_regularizer=1e-8, net_regularizer=1e-8),
    },
    'fm': {
        'criteo_x4_001': dict(embedding_dim=16, embedding_regularizer=1e-5,
                              net_regularizer=1e-5),
        'avazu_x4_001': dict(embedding_dim=16, embedding_regularizer=1e-6,
                             net_regularizer=1e-6),
    },
    'deepfm': {
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(1000,) * 5, net_dropout=0.2,
                              batch_norm=False, embedding_regularizer=1e-5,
                              net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(2000,) * 4, net_dropout=0.0,
                             batch_norm=False, embedding_regularizer=0.0, net_regularizer=0.0),
    },
    'dcn': {
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(1000,) * 5, net_dropout=0.2,
                              batch_norm=False, num_cross_layers=4,
                              embedding_regularizer=1e-5, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(2000,) * 3, net_dropout=0.0,
                             batch_norm=False, num_cross_layers=3,
                             embedding_regularizer=1e-8, net_regularizer=0.0),
    },
    'pnn': {  # BARS "IPNN".
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(1000,) * 2, net_dropout=0.2,
                              batch_norm=False, product_type='inner',
                              embedding_regularizer=1e-5, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(1000,) * 3, net_dropout=0.0,
                             batch_norm=False, product_type='inner',
                             embedding_regularizer=1e-9, net_regularizer=0.0),
    },
    'fibinet': {
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(2000,) * 3, net_dropout=0.0,
                              batch_norm=False, reduction_ratio=3,
                              bilinear_type='field_interaction', embedding_regularizer=1e-6,
                              net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(2000,) * 3, net_dropout=0.1,
                             batch_norm=False, reduction_ratio=3,
                             bilinear_type='field_interaction', embedding_regularizer=0.0,
                             net_regularizer=0.0),
    },
    'wide_deep': {
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(1000,) * 5, net_dropout=0.2,
                              batch_norm=False, embedding_regularizer=1e-5,
                              net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(2000,) * 4, net_dropout=0.1,
                             batch_norm=False, embedding_regularizer=1e-9, net_regularizer=0.0),
    },
    'dcnv2': {
        'criteo_x4_001': dict(embedding_dim=16, stacked_dnn_hidden_units=(500,) * 3,
                              parallel_dnn_hidden_units=(1000,) * 5, net_dropout=0.1,
                              batch_norm=True, num_cross_layers=3, model_structure='parallel',
                              use_low_rank_mixture=False, low_rank=32, num_experts=4,
                              embedding_regularizer=1e-5, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, stacked_dnn_hidden_units=(500,) * 3,
                             parallel_dnn_hidden_units=(2000,) * 4, net_dropout=0.0,
                             batch_norm=False, num_cross_layers=4, model_structure='parallel',
                             use_low_rank_mixture=False, low_rank=32, num_experts=4,
                             embedding_regularizer=1e-9, net_regularizer=0.0),
    },
    'xdeepfm': {
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(1000,) * 5,
                              cin_hidden_units=(64, 64, 64), net_dropout=0.2, batch_norm=False,
                              embedding_regularizer=1e-4, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(500,) * 3,
                             cin_hidden_units=(276,), net_dropout=0.0, batch_norm=False,
                             embedding_regularizer=0.0, net_regularizer=0.0),
    },
    'autoint': {  # BARS "AutoInt" (no DNN), not "AutoInt+".
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(), net_dropout=0.0,
                              batch_norm=False, attention_layers=5, num_heads=1,
                              attention_dim=64, use_residual=True, use_scale=False,
                              layer_norm=False, use_wide=False, embedding_regularizer=1e-5,
                              net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(), net_dropout=0.0,
                             batch_norm=False, attention_layers=7, num_heads=1,
                             attention_dim=128, use_residual=False, use_scale=False,
                             layer_norm=False, use_wide=True, embedding_regularizer=1e-6,
                             net_regularizer=0.0),
    },
}

# Registry aliases share their base model's BARS settings.
_ALIASES = {'ipnn': 'pnn'}


def bars_hparams(model: str, dataset: str) -> dict[str, Any]:
    """BARS hyperparameters of ``model`` on ``dataset``, ready for ``create_model(**...)``.

    Args:
      model: registry name (``deepfm``, ``dcn``, ``pnn``/``ipnn``, ``fibinet``, ...).
      dataset: ``criteo_x4_001`` or ``avazu_x4_001``.

    Returns:
      A fresh dict of hyperparameters (tuples for layer widths).

    Raises:
      ValueError: no BARS setting for this model or dataset (e.g. ``opnn``: BARS has no OPNN).
    """
    key = _ALIASES.get(model.lower(), model.lower())
    if key not in BARS:
        raise ValueError(f'No BARS hyperparameters for model {model!r}; have {sorted(BARS)} '
                         f'(+ aliases {sorted(_ALIASES)})')
    if dataset not in BARS[key]:
        raise ValueError(f'No BARS hyperparameters for dataset {dataset!r}; have {list(DATASETS)}')
    return dict(BARS[key][dataset])
