"""Every registered model: shape, finite logits, gradients to every parameter, parameter count
against a formula, the sparse-row contract, dtype handling, and hyperparameter validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.models import MODELS, create_model, model_hparam_names
from mlctr.models.layers.senet import senet_reduced_size

V, F, D = 120, 4, 4          # vocabulary rows, fields, embedding dim
H = (8, 6)                   # hidden units
P = F * (F - 1) // 2         # field pairs
BATCH = 16

def mlp_params(in_dim, hidden, out_dim=None):
    """Linear weights + biases of an MLP block."""
    dims = [in_dim, *hidden] + ([out_dim] if out_dim else [])
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


# Tiny configuration per case, and its parameter count written out by hand.
CASES = {
    'lr': ({}, V + 1),
    'fm': (dict(embedding_dim=D), V + 1 + V * D),
    'deepfm': (dict(embedding_dim=D, dnn_hidden_units=H),
               V + 1 + V * D + mlp_params(F * D, H, 1)),
    'dcn': (dict(embedding_dim=D, dnn_hidden_units=H, num_cross_layers=2),
            V * D + 2 * (F * D + F * D) + mlp_params(F * D, H) + (F * D + H[-1]) + 1),
    'dcnv2': (dict(embedding_dim=D, parallel_dnn_hidden_units=H, num_cross_layers=2,
                   batch_norm=False, model_structure='parallel'),
              V * D + 2 * (F * D * F * D + F * D) + mlp_params(F * D, H)
              + (F * D + H[-1]) + 1),
    'dcnv2_mix_stacked': (dict(embedding_dim=D, stacked_dnn_hidden_units=H, num_cross_layers=2,
                               batch_norm=False, model_structure='stacked',
                               use_low_rank_mixture=True, low_rank=3, num_experts=2),
                          V * D + 2 * F * D  # gating, shared by layers
                          + 2 * (2 * 2 * F * D * 3 + 2 * 3 * 3 + F * D)  # U, V, C, bias
                          + mlp_params(F * D, H) + H[-1] + 1),
    'ipnn': (dict(embedding_dim=D, dnn_hidden_units=H),
             V * D + mlp_params(F * D + P, H, 1)),
    'opnn': (dict(embedding_dim=D, dnn_hidden_units=H),
             V * D + P * D * D + mlp_params(F * D + P, H, 1)),
    'fibinet': (dict(embedding_dim=D, dnn_hidden_units=H, reduction_ratio=2,
                     bilinear_type='field_interaction'),
                V + V * D + 2 * F * senet_reduced_size(F, 2) + 2 * P * D * D
                + mlp_params(2 * P * D, H, 1)),
    'fibinet_each': (dict(embedding_dim=D, dnn_hidden_units=H, bilinear_type='field_each'),
                     V + V * D + 2 * F * senet_reduced_size(F, 3) + 2 * F * D * D
                     + mlp_params(2 * P * D, H, 1)),
    'fibinet_all': (dict(embedding_dim=D, dnn_hidden_units=H, bilinear_type='field_all'),
                    V + V * D + 2 * F * senet_reduced_size(F, 3) + 2 * D * D
                    + mlp_params(2 * P * D, H, 1)),
    'wide_deep': (dict(embedding_dim=D, dnn_hidden_units=H),
                  V + V * D + mlp_params(F * D, H, 1)),
    'xdeepfm': (dict(embedding_dim=D, dnn_hidden_units=H, cin_hidden_units=(3, 2)),
                V + V * D + (F * F * 3 + 3) + (F * 3 * 2 + 2) + (3 + 2 + 1)
                + mlp_params(F * D, H, 1)),
    'autoint': (dict(embedding_dim=D, attention_layers=2, attention_dim=6, num_heads=2,
                     use_residual=True),
                V * D + (3 * D * 6 + D * 6) + 3 * 6 * 6 + F * 6 + 1),
    'autoint_plus_wide': (dict(embedding_dim=D, attention_layers=1, attention_dim=D,
                               dnn_hidden_units=H, use_wide=True),
                          V * D + 3 * D * D + F * D + 1 + mlp_params(F * D, H, 1) + V),
}


# Variants only checked for their parameter count (their layers have numpy-reference tests).
COUNT_ONLY = ('fibinet_each', 'fibinet_all')


def _registry_name(case):
    return {'dcnv2_mix_stacked': 'dcnv2', 'fibinet_each': 'fibinet', 'fibinet_all': 'fibinet',
            'autoint_plus_wide': 'autoint'}.get(case, case)


def _build(case, **extra):
    hparams, _ = CASES[case]
    hparams = dict(hparams)
    if 'net_dropout' in model_hparam_names(_registry_name(case)):
        hparams['net_dropout'] = 0.1
    hparams.update(extra)
    return create_model(_registry_name(case), vocab_size=V, num_fields=F, **hparams)


def _ids(seed=0):
    return jax.random.randint(jax.random.key(seed), (BATCH, F), 0, V, dtype=jnp.int32)


def test_every_registered_model_has_a_case():
    assert set(MODELS) - {'pnn'} <= {_registry_name(c) for c in CASES}


@pytest.mark.parametrize('case', sorted(CASES))
def test_param_count_matches_formula(case):
    model = _build(case)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), _ids(), train=False))
    _, expected_count = CASES[case]
    assert sum(x.size for x in jax.tree_util.tree_leaves(shapes['params'])) == expected_count


@pytest.mark.parametrize('case', sorted(set(CASES) - set(COUNT_ONLY)))
def test_model_forward_gradients_and_gathered_rows(case):
    """Output shape, finite logits, a gradient for every parameter leaf, and the sparse-update
    contract: tables are used only through jnp.take on the given ids, so running
    ``model.clone(vocab_size=K)`` on the K gathered unique rows gives the same logits."""
    model = _build(case)
    ids = _ids()
    labels = jax.random.bernoulli(jax.random.key(3), 0.3, (BATCH,)).astype(jnp.float32)
    unique_rows, remapped = np.unique(np.asarray(ids), return_inverse=True)
    remapped = remapped.reshape(ids.shape).astype(np.int32)
    small_model = model.clone(vocab_size=len(unique_rows))

    def gather(path, leaf):
        if getattr(path[-1], 'key', None) == 'embedding_table':
            assert leaf.shape[0] == V
            return leaf[unique_rows]
        return leaf

    @jax.jit
    def run(ids, labels, remapped):
        # One compiled function per case keeps the suite fast on 2 shared CPU cores.
        variables = model.init({'params': jax.random.key(1), 'dropout': jax.random.key(2)}, ids,
                               train=False)

        def loss_fn(params):
            logits = model.apply({**variables, 'params': params}, ids, train=True,
                                 rngs={'dropout': jax.random.key(4)})
            bce = jnp.mean(jnp.maximum(logits, 0) - logits * labels
                           + jnp.log1p(jnp.exp(-jnp.abs(logits))))
            return bce, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])
        eval_logits = model.apply(variables, ids, train=False)
        small = jax.tree_util.tree_map_with_path(gather, variables)
        small_logits = small_model.apply(small, remapped, train=False)
        return loss, logits, grads, eval_logits, small_logits

    loss, logits, grads, eval_logits, small_logits = run(ids, labels, remapped)
    assert logits.shape == (BATCH,) and logits.dtype == jnp.float32
    assert eval_logits.shape == (BATCH,) and eval_logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits))) and bool(jnp.isfinite(loss))
    assert bool(jnp.all(jnp.isfinite(eval_logits)))
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(grad))), path
        assert bool(jnp.any(grad != 0)), f'no gradient reaches {jax.tree_util.keystr(path)}'
    np.testing.assert_allclose(np.asarray(small_logits), np.asarray(eval_logits), rtol=1e-6)


@pytest.mark.parametrize('case', ['deepfm', 'autoint'])
def test_bfloat16_compute_keeps_float32_params_and_logits(case):
    model = _build(case, dtype=jnp.bfloat16)
    f32_model = model.clone(dtype=jnp.float32)
    ids = _ids()

    @jax.jit
    def run(ids):
        variables = model.init(jax.random.key(1), ids, train=False)
        return (variables, model.apply(variables, ids, train=False),
                f32_model.apply(variables, ids, train=False))

    variables, logits, f32_logits = run(ids)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logits), np.asarray(f32_logits), atol=0.05)


def test_batch_norm_updates_batch_stats():
    model = create_model('deepfm', vocab_size=V, num_fields=F, embedding_dim=D,
                         dnn_hidden_units=H, batch_norm=True)
    ids = _ids()

    @jax.jit
    def run(ids):
        variables = model.init(jax.random.key(1), ids, train=False)
        return variables, model.apply(variables, ids, train=True, mutable=['batch_stats'],
                                      rngs={'dropout': jax.random.key(0)})

    variables, (logits, updates) = run(ids)
    assert logits.shape == (BATCH,) and bool(jnp.all(jnp.isfinite(logits)))
    before = jax.tree_util.tree_leaves(variables['batch_stats'])
    after = jax.tree_util.tree_leaves(updates['batch_stats'])
    assert len(before) == 4 and any(not np.allclose(a, b) for a, b in zip(before, after))


def test_aliases_select_the_product():
    assert create_model('ipnn', vocab_size=V, num_fields=F).product_type == 'inner'
    assert create_model('opnn', vocab_size=V, num_fields=F).product_type == 'outer'
    assert create_model('pnn', vocab_size=V, num_fields=F).product_type == 'inner'
    assert create_model('pnn', vocab_size=V, num_fields=F,
                        product_type='outer').product_type == 'outer'
    with pytest.raises(ValueError, match='product_type'):
        create_model('ipnn', vocab_size=V, num_fields=F, product_type='outer')


@pytest.mark.parametrize('name', sorted(MODELS))
def test_unknown_hyperparameter_raises(name):
    with pytest.raises(ValueError) as error:
        create_model(name, vocab_size=V, num_fields=F, hiden_units=(8,))
    assert 'hiden_units' in str(error.value)
    assert 'embedding_regularizer' in str(error.value)  # lists the valid names


def test_unknown_model_raises():
    with pytest.raises(ValueError, match='deepfm'):
        create_model('deepfmm', vocab_size=V, num_fields=F)


def test_hparam_names_and_list_to_tuple():
    names = model_hparam_names('dcn')
    # Inherited fields first (CTRModel, EmbeddingModel, DNNModel), then the model's own.
    assert names == ['embedding_regularizer', 'net_regularizer', 'dtype', 'embedding_dim',
                     'dnn_hidden_units', 'net_dropout', 'batch_norm', 'num_cross_layers']
    model = create_model('dcn', vocab_size=V, num_fields=F, dnn_hidden_units=[8, 8])
    assert model.dnn_hidden_units == (8, 8)
    hash(model)  # hashable: usable as a static jit argument


@pytest.mark.parametrize('name', sorted(MODELS))
def test_first_fields_are_vocab_size_and_num_fields(name):
    fields = [f.name for f in dataclasses.fields(MODELS[name]) if f.init]
    assert fields[:2] == ['vocab_size', 'num_fields']
    assert 'embedding_regularizer' in fields and 'net_regularizer' in fields
    assert 'dtype' in fields


@pytest.mark.parametrize('name,bad', [('pnn', dict(product_type='kernel')),
                                      ('dcnv2', dict(model_structure='serial')),
                                      ('fibinet', dict(bilinear_type='all'))])
def test_bad_choice_values_raise(name, bad):
    model = create_model(name, vocab_size=V, num_fields=F, embedding_dim=D, **bad)
    with pytest.raises(ValueError):
        jax.eval_shape(lambda: model.init(jax.random.key(0), _ids(), train=False))
