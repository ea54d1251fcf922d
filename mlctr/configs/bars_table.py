"""BARS hyperparameters per model and dataset: the x4_001 table `BARS` (model -> dataset ->
hyperparameters; embedding 16, batch 10000), a plain dict to extend with a model or a
dataset, the x1 and x4_002 runs in bars_other_splits.py, and `bars_hparams` to read both.

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

from mlctr.configs import bars_other_splits

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
    # FuxiCTR v2.2.0 runs; FinalMLP: batch 10000, FinalNet: batch 8192 (the trainer's).
    'finalmlp': {
        'criteo_x4_001': dict(embedding_dim=16, mlp1_hidden_units=(1000,) * 5, mlp1_dropout=0.2,
                              mlp1_batch_norm=False, mlp2_hidden_units=(500,), mlp2_dropout=0.1,
                              mlp2_batch_norm=False, use_fs=False, fs_hidden_units=(1000,),
                              num_heads=50, embedding_regularizer=1e-5, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, mlp1_hidden_units=(2000,) * 3, mlp1_dropout=0.0,
                             mlp1_batch_norm=True, mlp2_hidden_units=(500,), mlp2_dropout=0.0,
                             mlp2_batch_norm=False, use_fs=False, fs_hidden_units=(1000,),
                             num_heads=20, embedding_regularizer=1e-9, net_regularizer=0.0),
    },
    'finalnet': {
        'criteo_x4_001': dict(embedding_dim=16, block_type='2B', batch_norm=True,
                              use_feature_gating=True, block1_hidden_units=(1000,) * 3,
                              block1_hidden_activations='relu', block1_dropout=0.4,
                              block2_hidden_units=(512,), block2_hidden_activations='relu',
                              block2_dropout=0.4, residual_type='concat',
                              embedding_regularizer=1e-5, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, block_type='2B', batch_norm=True,
                             use_feature_gating=True, block1_hidden_units=(2000,) * 3,
                             block1_hidden_activations='relu', block1_dropout=0.0,
                             block2_hidden_units=(500,), block2_hidden_activations='relu',
                             block2_dropout=0.1, residual_type='concat',
                             embedding_regularizer=0.0, net_regularizer=0.0),
    },
    # Not BARS (no DCNv3 run there): the authors' logs on the same x4_001 splits, FuxiCTR
    # code (salmon1802/DCNv3 checkpoints/Criteo_x4_10_h5/DCNv3_Criteo_047_43d9ad18.log,
    # batch 4096, test AUC 0.816197; checkpoints/Avazu_x4_h5/SDCNv3_Avazu.log, batch 10000,
    # test AUC 0.797029: that repository's "SDCNv3" is the two-network model FuxiCTR calls
    # DCNv3, its "DCNv3_Avazu.log" an earlier one-network version). Parameter counts equal
    # the logs' (tests/models/test_regularization_and_bars.py).
    'dcnv3': {
        'criteo_x4_001': dict(embedding_dim=16, num_deep_cross_layers=4,
                              num_shallow_cross_layers=5, deep_net_dropout=0.1,
                              shallow_net_dropout=0.2, layer_norm=True, batch_norm=False,
                              num_heads=1, embedding_regularizer=1e-5, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, num_deep_cross_layers=4,
                             num_shallow_cross_layers=5, deep_net_dropout=0.0,
                             shallow_net_dropout=0.0, layer_norm=True, batch_norm=True,
                             num_heads=4, embedding_regularizer=0.0, net_regularizer=0.0),
    },
    'masknet': {  # FuxiCTR v2.2.0 runs (MaskNet_<dataset>/README.md, 2024).
        'criteo_x4_001': dict(embedding_dim=16, dnn_hidden_units=(1000,) * 5, net_dropout=0.3,
                              model_type='ParallelMaskNet', parallel_num_blocks=2,
                              parallel_block_dim=500, reduction_ratio=0.1,
                              emb_layernorm=False, net_layernorm=False,
                              embedding_regularizer=1e-5, net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=16, dnn_hidden_units=(2000,) * 3, net_dropout=0.0,
                             model_type='ParallelMaskNet', parallel_num_blocks=6,
                             parallel_block_dim=500, reduction_ratio=0.8,
                             emb_layernorm=False, net_layernorm=False,
                             embedding_regularizer=1e-9, net_regularizer=0.0),
    },
    'onn': {  # FuxiCTR v1.0.2 runs; BARS ran ONN at embedding 8, not 16.
        'criteo_x4_001': dict(embedding_dim=8, dnn_hidden_units=(1000,) * 3, net_dropout=0.4,
                              batch_norm=False, embedding_regularizer=1e-5,
                              net_regularizer=0.0),
        'avazu_x4_001': dict(embedding_dim=8, dnn_hidden_units=(1000,) * 4, net_dropout=0.0,
                             batch_norm=False, embedding_regularizer=0.0, net_regularizer=0.0),
    },
}

# Registry models BARS never ran: they train with their class defaults (docs/models.md says
# where those come from) and ``bars_hparams`` refuses them.
NO_BARS_RUN = ('opnn', 'gdcn', 'eulernet')

# Registry aliases share their base model's BARS settings.
_ALIASES = {'ipnn': 'pnn'}


def _key(model: str) -> str:
    return _ALIASES.get(model.lower(), model.lower())


def has_run(model: str, dataset: str) -> bool:
    """Whether BARS published a tuned run of ``model`` on ``dataset``."""
    key = _key(model)
    return dataset in BARS.get(key, {}) or dataset in bars_other_splits.SETS.get(key, {})


def batch_size(model: str, dataset: str) -> int:
    """The batch size of BARS's run of ``model`` on ``dataset`` (x1: 4096)."""
    key = _key(model)
    if dataset in DATASETS:
        return BARS_BATCH_SIZE
    return bars_other_splits.BATCH_SIZES[key][dataset]


def source(model: str, dataset: str) -> str:
    """Where the values of ``model`` on ``dataset`` were read from (a reczoo/BARS README)."""
    key = _key(model)
    if key == 'dcnv3':  # no BARS run: the authors' logs on the same x4 splits
        return 'salmon1802/DCNv3 checkpoints/ (the authors\' logs, docs/models.md)'
    if dataset in DATASETS:
        folder = bars_other_splits.FOLDERS[key]
        run = {'pnn': 'IPNN'}.get(key, folder)
        return f'ranking/ctr/{folder}/{run}_{dataset}/README.md'
    return bars_other_splits.source(key, dataset)


def bars_hparams(model: str, dataset: str) -> dict[str, Any]:
    """BARS hyperparameters of ``model`` on ``dataset``, ready for ``create_model(**...)``.

    Args:
      model: registry name (``deepfm``, ``dcn``, ``pnn``/``ipnn``, ``fibinet``, ...).
      dataset: a BARS dataset (``criteo_x4_001``, ``frappe_x1``, ...; bars_datasets.DATASETS).

    Returns:
      A fresh dict of hyperparameters (tuples for layer widths).

    Raises:
      ValueError: no BARS run of this model on this dataset (e.g. ``opnn``: BARS has no OPNN).
    """
    key = _key(model)
    if key not in BARS:
        raise ValueError(f'No BARS hyperparameters for model {model!r}; have {sorted(BARS)} '
                         f'(+ aliases {sorted(_ALIASES)})')
    if dataset in BARS[key]:
        return dict(BARS[key][dataset])
    if dataset in bars_other_splits.SETS.get(key, {}):
        return dict(bars_other_splits.SETS[key][dataset])
    raise ValueError(f'No BARS hyperparameters of {model!r} for dataset {dataset!r}: BARS '
                     f'published no run of it there')
