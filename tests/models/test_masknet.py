"""MaskNet's layers and model against numpy references written from the paper's equations
(Wang et al. 2021, eq. 5-9; mlctr/models/layers/mask.py, mlctr/models/masknet.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.configs.bars_table import bars_hparams
from mlctr.models import create_model
from mlctr.models.layers import mask

B, F, D = 5, 3, 4
V = 40


def _ln(x, scale, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _relu(x):
    return np.maximum(x, 0)


def _shifted(variables, seed=3):
    """Parameters moved away from their init (zero biases, unit scales) so each one counts."""
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        leaf + 0.3 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)])


def _mask_block_ref(p, v_emb, v_hidden, layer_norm):
    """eq. 5-6: mask = W2 relu(W1 v_emb + b1) + b2; eq. 7-9: relu(LN(W (mask * v_hidden)))."""
    agg = _relu(v_emb @ p['mask_aggregation']['kernel'] + p['mask_aggregation']['bias'])
    v_mask = agg @ p['mask_projection']['kernel'] + p['mask_projection']['bias']
    out = (v_mask * v_hidden) @ p['hidden']['kernel']
    if layer_norm:
        out = _ln(out, p['layer_norm']['scale'], p['layer_norm']['bias'])
    return _relu(out)


@pytest.mark.parametrize('layer_norm', [True, False])
def test_mask_block_matches_numpy(layer_norm):
    rng = np.random.default_rng(0)
    v_emb = rng.normal(size=(B, 12)).astype(np.float32)
    v_hidden = rng.normal(size=(B, 7)).astype(np.float32)
    block = mask.MaskBlock(output_dim=6, reduction_ratio=0.6, use_layer_norm=layer_norm)
    variables = _shifted(block.init(jax.random.key(0), v_emb, v_hidden, train=False))
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    assert p['mask_aggregation']['kernel'].shape == (12, 4)   # int(7 * 0.6) = 4 units
    assert p['mask_projection']['kernel'].shape == (4, 7)
    assert 'bias' not in p['hidden']                            # bias-free, as FuxiCTR
    out = block.apply(variables, v_emb, v_hidden, train=False)
    np.testing.assert_allclose(out, _mask_block_ref(p, v_emb, v_hidden, layer_norm),
                               rtol=1e-5, atol=1e-5)


def test_mask_block_dropout_only_in_training():
    v = np.ones((B, 6), np.float32)
    block = mask.MaskBlock(output_dim=50, reduction_ratio=1.0, dropout_rate=0.5,
                           use_layer_norm=False)
    variables = block.init(jax.random.key(0), v, v, train=False)
    eval_out = block.apply(variables, v, v, train=False)
    train_out = block.apply(variables, v, v, train=True, rngs={'dropout': jax.random.key(1)})
    kept = np.asarray(train_out) != 0
    np.testing.assert_allclose(np.asarray(train_out)[kept], 2 * np.asarray(eval_out)[kept],
                               rtol=1e-6)
    assert kept.sum() < (np.asarray(eval_out) != 0).sum()


def test_field_layer_norm_is_one_layer_norm_per_field():
    x = np.random.default_rng(1).normal(size=(B, F, D)).astype(np.float32)
    module = mask.FieldLayerNorm()
    variables = _shifted(module.init(jax.random.key(0), x))
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    assert p['scale'].shape == p['bias'].shape == (F, D)
    expected = np.stack([_ln(x[:, f], p['scale'][f], p['bias'][f]) for f in range(F)], 1)
    np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_mask_units_truncate_and_refuse_zero():
    assert mask.mask_hidden_units(624, 0.1) == 62   # BARS Criteo: 39 x 16 inputs, ratio 0.1
    with pytest.raises(ValueError, match='no aggregation unit'):
        mask.mask_hidden_units(4, 0.1)


@pytest.mark.parametrize('model_type', ['SerialMaskNet', 'ParallelMaskNet'])
def test_masknet_model_matches_numpy(model_type):
    """The whole model: masks from the raw embedding, blocks on the normed one."""
    model = create_model('masknet', vocab_size=V, num_fields=F, embedding_dim=D,
                         dnn_hidden_units=(6, 5), model_type=model_type, parallel_num_blocks=3,
                         parallel_block_dim=4, reduction_ratio=0.5, emb_layernorm=True,
                         net_layernorm=True, net_dropout=0.0)
    ids = np.random.default_rng(2).integers(0, V, (B, F)).astype(np.int32)
    variables = _shifted(model.init(jax.random.key(0), ids, train=False))
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    e = p['embedding']['embedding_table'][ids]
    v_emb = e.reshape(B, -1)
    v_hidden = _ln(e, p['emb_norm']['scale'], p['emb_norm']['bias']).reshape(B, -1)
    if model_type == 'SerialMaskNet':
        out = _mask_block_ref(p['mask_block_0'], v_emb, v_hidden, True)
        out = _mask_block_ref(p['mask_block_1'], v_emb, out, True)
        expected = out @ p['fc']['kernel'][:, 0] + p['fc']['bias'][0]
    else:
        h = np.concatenate([_mask_block_ref(p[f'mask_block_{i}'], v_emb, v_hidden, True)
                            for i in range(3)], -1)
        for layer in ('dense_0', 'dense_1'):
            h = _relu(h @ p['dnn'][layer]['kernel'] + p['dnn'][layer]['bias'])
        expected = h @ p['dnn']['output']['kernel'][:, 0] + p['dnn']['output']['bias'][0]
    got = model.apply(variables, jnp.asarray(ids), train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('dataset, vocab_size, num_fields, logged', [
    ('criteo_x4_001', 910_747, 39, 20_358_077),
    ('avazu_x4_001', 3_750_999, 24, 76_594_787)])
def test_bars_settings_have_the_parameter_count_bars_logged(dataset, vocab_size, num_fields,
                                                            logged):
    """BARS's MaskNet logs ('Total number of parameters') at their feature maps' vocabularies
    (the sum of the logged vocab_size of every field): the same blocks, widths and biases."""
    model = create_model('masknet', vocab_size=vocab_size, num_fields=num_fields,
                         **bars_hparams('masknet', dataset))
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((2, num_fields), jnp.int32), train=False))
    assert sum(x.size for x in jax.tree_util.tree_leaves(shapes['params'])) == logged


def test_initialisation_as_fuxictr():
    """Embeddings normal(1e-4); Linears xavier normal, zero biases; layer norms 1 and 0."""
    model = create_model('masknet', vocab_size=2000, num_fields=8, embedding_dim=8,
                         dnn_hidden_units=(64,), model_type='SerialMaskNet', reduction_ratio=1.0,
                         emb_layernorm=True, net_layernorm=True)
    p = model.init(jax.random.key(0), jnp.zeros((2, 8), jnp.int32), train=False)['params']
    assert abs(float(jnp.std(p['embedding']['embedding_table'])) - 1e-4) < 1e-5
    block = p['mask_block_0']
    assert abs(float(jnp.std(block['mask_aggregation']['kernel'])) - np.sqrt(2 / 128)) < 0.01
    assert not jnp.any(block['mask_aggregation']['bias'])
    assert abs(float(jnp.std(block['hidden']['kernel'])) - np.sqrt(2 / (64 + 64))) < 0.01
    for norm in (block['layer_norm'], p['emb_norm']):
        assert jnp.all(norm['scale'] == 1) and not jnp.any(norm['bias'])
