"""FuxiCTR-style L2 penalty and the BARS hyperparameter table."""

import jax
import numpy as np
import pytest

from mlctr.models import MODELS, create_model
from mlctr.configs.bars_table import BARS_BATCH_SIZE, DATASETS, bars_hparams
from mlctr.models.regularization import l2_penalty

def test_l2_penalty_matches_manual_sum():
    model = create_model('deepfm', vocab_size=50, num_fields=3, embedding_dim=4,
                         dnn_hidden_units=(5,), embedding_regularizer=0.3, net_regularizer=0.7)
    ids = np.zeros((2, 3), np.int32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, train=False))['params']
    rng = np.random.default_rng(0)  # any values: non-zero biases included
    params = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                                    params)
    emb = (np.sum(np.square(params['embedding']['embedding_table']))
           + np.sum(np.square(params['linear']['embedding']['embedding_table'])))
    net = sum(np.sum(np.square(x)) for x in jax.tree_util.tree_leaves(params['dnn']))
    net += np.square(params['linear']['bias'])
    expected = 0.3 / 2 * emb + 0.7 / 2 * net
    penalty, full_penalty, grads = jax.jit(lambda p: (
        l2_penalty(model, p), l2_penalty(model, {'params': p}),
        jax.grad(lambda q: l2_penalty(model, q))(p)))(params)
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)
    # Also accepts the full variables dict, and is differentiable.
    np.testing.assert_allclose(float(full_penalty), expected, rtol=1e-5)
    np.testing.assert_allclose(grads['embedding']['embedding_table'],
                               0.3 * params['embedding']['embedding_table'], rtol=1e-5)


def test_l2_penalty_zero_when_unregularised():
    model = create_model('dcn', vocab_size=20, num_fields=2, embedding_dim=2,
                         dnn_hidden_units=(3,), embedding_regularizer=0.0)
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), np.zeros((1, 2), np.int32), train=False))['params']
    params = jax.tree_util.tree_map(lambda s: np.ones(s.shape, np.float32), params)
    assert float(l2_penalty(model, params)) == 0.0


def test_bars_deepfm_criteo_values():
    hp = bars_hparams('deepfm', 'criteo_x4_001')
    assert hp == dict(embedding_dim=16, dnn_hidden_units=(1000,) * 5, net_dropout=0.2,
                      batch_norm=False, embedding_regularizer=1e-5, net_regularizer=0.0)
    assert BARS_BATCH_SIZE == 10000


@pytest.mark.parametrize('name', sorted(set(MODELS) - {'opnn'}))
@pytest.mark.parametrize('dataset', DATASETS)
def test_bars_configs_build_every_model(name, dataset):
    model = create_model(name, vocab_size=10, num_fields=3, **bars_hparams(name, dataset))
    assert model.embedding_regularizer == bars_hparams(name, dataset)['embedding_regularizer']


@pytest.mark.parametrize('name', sorted(set(MODELS) - {'opnn'}))
def test_class_defaults_are_bars_criteo(name):
    hparams = bars_hparams(name, 'criteo_x4_001')
    model = create_model(name, vocab_size=10, num_fields=3)
    assert {key: getattr(model, key) for key in hparams} == hparams


def test_bars_unknown_model_or_dataset_raises():
    with pytest.raises(ValueError, match='opnn'):
        bars_hparams('opnn', 'criteo_x4_001')
    with pytest.raises(ValueError, match='criteo_x1'):
        bars_hparams('deepfm', 'criteo_x1')
