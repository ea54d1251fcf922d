"""Every registered model: shape, finite logits, gradients to every parameter, parameter count
against a formula, the sparse-row contract, dtype handling, and hyperparameter validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.models import qr
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


def mask_block_params(emb_dim, in_dim, out_dim, ratio, layer_norm):
    """MaskNet's MaskBlock: the mask's two Linears, the bias-free Linear, the layer norm."""
    units = int(in_dim * ratio)
    return (emb_dim * units + units + units * in_dim + in_dim + in_dim * out_dim
            + (2 * out_dim if layer_norm else 0))


def euler_params(num_in, num_out, dim, layer_norm):
    """EulerNet's layer: orders, the implicit Linear, two phase biases, two layer norms."""
    return (num_in * num_out + num_in * dim * num_out * dim + num_out * dim
            + 2 * num_out * dim + (4 * dim if layer_norm else 0))


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
    # Per cross layer: W [FD, FD/2], layer norm [FD/2] x 2, bias [FD]; a Linear per network.
    'dcnv3': (dict(embedding_dim=D, num_heads=2, num_deep_cross_layers=2,
                   num_shallow_cross_layers=1),
              V * D * 2 + 3 * (F * D * F * D // 2 + F * D + F * D) + 2 * (F * D + 1)),
    'finalmlp': (dict(embedding_dim=D, mlp1_hidden_units=H, mlp2_hidden_units=(4,),
                      num_heads=2),
                 V * D + mlp_params(F * D, H) + mlp_params(F * D, (4,))
                 + (H[-1] + 1) + (4 + 1) + 2 * (H[-1] // 2) * (4 // 2)),
    'finalmlp_fs': (dict(embedding_dim=D, mlp1_hidden_units=H, mlp2_hidden_units=(4,),
                         num_heads=2, use_fs=True, fs_hidden_units=(5,)),
                    V * D + mlp_params(F * D, H) + mlp_params(F * D, (4,))
                    + (H[-1] + 1) + (4 + 1) + 2 * (H[-1] // 2) * (4 // 2)
                    + 2 * (D + mlp_params(D, (5,), F * D))),  # two gates
    'finalnet': (dict(embedding_dim=D, batch_norm=False, block1_hidden_units=(6, 4),
                      block2_hidden_units=(4,)),
                 V * D + (F * F + F)  # field gate
                 + (2 * F * D * 6 + 6) + (6 * 4 + 4) + (4 + 1)  # block 1 on [e, e * gates]
                 + (F * D * 4 + 4) + (4 + 1)),  # block 2
    'finalnet_1b_sum': (dict(embedding_dim=D, batch_norm=False, block_type='1B',
                             use_feature_gating=False, residual_type='sum',
                             block1_hidden_units=(6, 4)),
                        V * D + (F * D * 12 + 12) + (6 * 8 + 8) + (4 + 1)),
    'gdcn': (dict(embedding_dim=D, dnn_hidden_units=H, num_cross_layers=2),
             V * D + 2 * (2 * F * D * F * D + F * D) + mlp_params(F * D, H)
             + (F * D + H[-1]) + 1),
    'gdcn_stacked': (dict(embedding_dim=D, dnn_hidden_units=H, num_cross_layers=2,
                          model_structure='stacked'),
                     V * D + 2 * (2 * F * D * F * D + F * D) + mlp_params(F * D, H, 1)),
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
    'masknet': (dict(embedding_dim=D, dnn_hidden_units=H, parallel_num_blocks=2,
                     parallel_block_dim=5, reduction_ratio=0.5, emb_layernorm=True,
                     net_layernorm=True),
                V * D + 2 * F * D + 2 * mask_block_params(F * D, F * D, 5, 0.5, True)
                + mlp_params(2 * 5, H, 1)),
    'masknet_serial': (dict(embedding_dim=D, dnn_hidden_units=H, model_type='SerialMaskNet',
                            reduction_ratio=0.5, emb_layernorm=False, net_layernorm=False),
                       V * D + mask_block_params(F * D, F * D, H[0], 0.5, False)
                       + mask_block_params(F * D, H[0], H[1], 0.5, False) + H[1] + 1),
    'onn': (dict(embedding_dim=D, dnn_hidden_units=H),
            V * F * D + mlp_params(F * D + P, H, 1)),
    'eulernet': (dict(embedding_dim=D, shape=(3, 2), layer_norm=True),
                 V * D + F + euler_params(F, 3, D, True) + euler_params(3, 2, D, True)
                 + 2 * D + 1),
}


# Variants only checked for their parameter count (their layers have numpy-reference tests).
# finalmlp_fs: its gates' hidden layers get no gradient at initialisation, as FuxiCTR's
# (test_layers_final_cross.py shows it).
COUNT_ONLY = ('fibinet_each', 'fibinet_all', 'finalmlp_fs')


def _registry_name(case):
    return {'dcnv2_mix_stacked': 'dcnv2', 'fibinet_each': 'fibinet', 'fibinet_all': 'fibinet',
            'autoint_plus_wide': 'autoint', 'gdcn_stacked': 'gdcn',
            'finalmlp_fs': 'finalmlp', 'finalnet_1b_sum': 'finalnet',
            'masknet_serial': 'masknet'}.get(case, case)


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


@pytest.mark.parametrize('case', ['deepfm', 'autoint', 'finalmlp', 'finalnet', 'gdcn', 'dcnv3'])
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
                                      ('fibinet', dict(bilinear_type='all')),
                                      ('gdcn', dict(model_structure='serial')),
                                      ('finalnet', dict(block_type='3B')),
                                      ('finalnet', dict(residual_type='product')),
                                      ('finalmlp', dict(num_heads=7)),
                                      ('masknet', dict(model_type='Serial'))])
def test_bad_choice_values_raise(name, bad):
    model = create_model(name, vocab_size=V, num_fields=F, embedding_dim=D, **bad)
    with pytest.raises(ValueError):
        jax.eval_shape(lambda: model.init(jax.random.key(0), _ids(), train=False))


def test_dcnv3_refuses_an_odd_embedding_dim():
    model = create_model('dcnv3', vocab_size=V, num_fields=F, embedding_dim=3)
    with pytest.raises(ValueError, match='embedding_dim must be even, got 3'):
        jax.eval_shape(lambda: model.init(jax.random.key(0), _ids(), train=False))


# ---------------------------------------------------------------------------
# Quotient-remainder embeddings (mlctr/models/qr.py): the models take [B, 2F] table rows.

QR_SIZES = (50, 7, 3, 60)    # per-field ids, V in all; m = 7 splits the large fields only
QR_M = 7


def _qr_layout(combiner, collisions=QR_M):
    offsets = np.concatenate([[0], np.cumsum(QR_SIZES)[:-1]])
    fields = [{'vocab_size': s, 'offset': int(o)} for s, o in zip(QR_SIZES, offsets)]
    return qr.QRLayout.from_fields(fields, collisions, combiner)


def _qr_ids(seed=0):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(QR_SIZES)[:-1]])
    return (offsets + rng.integers(0, QR_SIZES, (BATCH, F))).astype(np.int32)


def _qr_pairs(layout):
    """(quotient row, remainder row) of every dataset id 0..V-1, written out per id."""
    field = np.repeat(np.arange(F), QR_SIZES)
    local = np.arange(V) - layout.offsets[field]
    return (layout.quotient_offsets[field] + local // QR_M,
            layout.remainder_offsets[field] + local % QR_M)


def test_qr_fm_matches_numpy_reference():
    """FM on QR rows: each field's two embeddings combined, its two weights summed."""
    assert sum(QR_SIZES) == V and len(QR_SIZES) == F
    for combiner in ('product', 'sum'):
        layout = _qr_layout(combiner)
        model = create_model('fm', vocab_size=layout.num_rows, num_fields=F, embedding_dim=D,
                             qr_combiner=combiner)
        ids = _qr_ids()
        rows = layout.rows(ids)
        variables = model.init(jax.random.key(0), rows, train=False)
        params = jax.tree_util.tree_map(
            lambda x: np.asarray(jax.random.normal(jax.random.key(5), x.shape)), variables['params'])
        table = params['embedding']['embedding_table']
        weights = params['linear']['embedding']['embedding_table'][:, 0]
        local = ids - layout.offsets
        q = local // QR_M + layout.quotient_offsets
        r = local % QR_M + layout.remainder_offsets
        emb = table[q] * table[r] if combiner == 'product' else table[q] + table[r]
        fm = 0.5 * np.sum(np.sum(emb, 1) ** 2 - np.sum(emb ** 2, 1), -1)
        expected = params['linear']['bias'] + np.sum(weights[q] + weights[r], 1) + fm
        got = model.apply({'params': params}, rows, train=False)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('case', sorted(set(CASES) - set(COUNT_ONLY)))
def test_qr_model_equals_the_plain_model_on_its_combined_table(case):
    """Every model runs unchanged above embed(): on QR rows it gives the logits of the plain
    model whose table rows are the combined pairs (first-order weights: the summed pairs),
    trains (a gradient for every leaf) and holds tables of layout.num_rows rows."""
    # Two cases with 'sum', so both combiners run through whole models.
    combiner = 'sum' if case in ('dcn', 'autoint') else 'product'
    layout = _qr_layout(combiner)
    hparams = dict(CASES[case][0])
    name = _registry_name(case)
    qr_model = create_model(name, vocab_size=layout.num_rows, num_fields=F,
                            qr_combiner=combiner, **hparams)
    plain = create_model(name, vocab_size=V, num_fields=F, **hparams)
    ids = _qr_ids()
    rows = layout.rows(ids)
    quotient, remainder = _qr_pairs(layout)

    def plain_table(path, leaf):
        if getattr(path[-1], 'key', None) != 'embedding_table':
            return leaf
        assert leaf.shape[0] == layout.num_rows < V
        if 'linear' in jax.tree_util.keystr(path):
            return leaf[quotient] + leaf[remainder]
        pairs = jnp.stack([leaf[quotient], leaf[remainder]], 1).reshape(1, 2 * V, -1)
        return qr.combine(pairs, combiner)[0]

    @jax.jit
    def run(rows, ids):
        variables = qr_model.init({'params': jax.random.key(1), 'dropout': jax.random.key(2)},
                                  rows, train=False)
        # Away from the std-1e-4 init, so the combined products are not ~1e-8.
        variables = {**variables, 'params': jax.tree_util.tree_map(
            lambda x: jax.random.normal(jax.random.key(7), x.shape) * 0.3 + x,
            variables['params'])}
        plain_vars = jax.tree_util.tree_map_with_path(plain_table, variables)

        def loss_fn(params):
            logits = qr_model.apply({**variables, 'params': params}, rows, train=True,
                                    rngs={'dropout': jax.random.key(4)})
            return jnp.mean(jax.nn.softplus(-logits))

        grads = jax.grad(loss_fn)(variables['params'])
        return (qr_model.apply(variables, rows, train=False),
                plain.apply(plain_vars, ids, train=False), grads)

    qr_logits, plain_logits, grads = run(rows, ids)
    np.testing.assert_allclose(np.asarray(qr_logits), np.asarray(plain_logits),
                               rtol=2e-5, atol=2e-5)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.any(grad != 0)), path


def test_qr_model_refuses_dataset_ids_in_one_line():
    layout = _qr_layout('product')
    model = create_model('deepfm', vocab_size=layout.num_rows, num_fields=F, embedding_dim=D,
                         dnn_hidden_units=H, qr_combiner='product')
    with pytest.raises(ValueError, match=r'takes 2 x 4 table rows per example.*\(16, 4\)'):
        model.init(jax.random.key(0), _qr_ids(), train=False)
    with pytest.raises(ValueError, match="unknown qr combiner 'mean'"):
        create_model('deepfm', vocab_size=V, num_fields=F, qr_combiner='mean')
