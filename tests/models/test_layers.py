"""Every shared layer against a small numpy reference written here, on tiny shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.models import layers
from mlctr.models.layers import initializers, product
from mlctr.models.layers.senet import senet_reduced_size

B, F, D = 6, 4, 3
RTOL, ATOL = 1e-5, 1e-6

def _emb(seed=0, shape=(B, F, D)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _init_apply(module, *args, param_shift=0.0, **kwargs):
    """Initialises ``module``, adds ``param_shift`` to every parameter (so zero-initialised
    biases are exercised too), applies it, in one jitted call rather than op by op.
    Returns (numpy output, numpy params)."""

    @jax.jit
    def run(*args):
        variables = module.init(jax.random.key(0), *args, **kwargs)
        variables = jax.tree_util.tree_map(lambda x: x + param_shift, variables)
        return variables, module.apply(variables, *args, **kwargs)

    variables, out = run(*args)
    params = (jax.tree_util.tree_map(np.asarray, variables['params'])
              if 'params' in variables else {})
    return np.asarray(out), params


def _pairs(num_fields):
    return [(i, j) for i in range(num_fields) for j in range(i + 1, num_fields)]


def _relu(x):
    return np.maximum(x, 0)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- embedding
def test_feature_embedding_is_a_row_lookup():
    ids = np.array([[0, 5, 9], [3, 3, 1]], np.int32)
    out, params = _init_apply(layers.FeatureEmbedding(vocab_size=10, embedding_dim=D), ids)
    table = params['embedding_table']
    assert table.shape == (10, D)
    np.testing.assert_array_equal(out, table[ids])


def test_field_offsets():
    np.testing.assert_array_equal(layers.field_offsets([3, 5, 2]), [0, 3, 8])


def test_linear_term():
    ids = np.array([[0, 5, 9], [3, 3, 1]], np.int32)
    out, p = _init_apply(layers.LinearTerm(vocab_size=10, use_bias=True), ids, param_shift=0.5)
    w = p['embedding']['embedding_table'][:, 0]
    np.testing.assert_allclose(out, w[ids].sum(-1) + 0.5, rtol=RTOL)


def test_initializers_match_fuxictr():
    # Embedding: normal(std=1e-4); Linear: xavier_normal (untruncated) std sqrt(2/(in+out));
    # torch fans for a 3-D tensor (P, D, D): fan_in = D*D, fan_out = P*D.
    table, kernel, w = jax.jit(lambda key: (
        initializers.embedding_normal()(jax.random.fold_in(key, 0), (200, 100)),
        initializers.xavier_normal()(jax.random.fold_in(key, 1), (150, 150)),
        initializers.torch_xavier_normal((50, 20, 20))(jax.random.fold_in(key, 2),
                                                       (50, 20, 20))))(jax.random.key(0))
    assert abs(float(jnp.std(table)) / 1e-4 - 1) < 0.02
    assert abs(float(jnp.std(kernel)) / np.sqrt(2 / 300) - 1) < 0.02
    assert float(jnp.max(jnp.abs(kernel))) > 2.5 * np.sqrt(2 / 300)  # not truncated at 2 std
    assert abs(float(jnp.std(w)) / np.sqrt(2 / (400 + 1000)) - 1) < 0.02


# ----------------------------------------------------------------------------- MLP
def test_mlp_block_matches_numpy():
    x = _emb(1, (B, 5))
    module = layers.MLPBlock(hidden_units=(4, 3), output_dim=1)
    out, p = _init_apply(module, x, train=False)
    h = _relu(x @ p['dense_0']['kernel'] + p['dense_0']['bias'])
    h = _relu(h @ p['dense_1']['kernel'] + p['dense_1']['bias'])
    ref = h @ p['output']['kernel'] + p['output']['bias']
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


def test_mlp_block_batch_norm_train_mode_matches_numpy():
    x = _emb(2, (8, 5))
    module = layers.MLPBlock(hidden_units=(4,), batch_norm=True)

    @jax.jit
    def run(x):
        variables = module.init(jax.random.key(0), x, train=False)
        return variables, module.apply(variables, x, train=True, mutable=['batch_stats'])

    variables, (out, updates) = run(x)
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    y = x @ p['dense_0']['kernel'] + p['dense_0']['bias']
    mean, var = y.mean(0), y.var(0)
    ref = _relu((y - mean) / np.sqrt(var + 1e-5))  # scale 1, bias 0 at init
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
    # Running mean moves 10% towards the batch mean (torch momentum 0.1).
    np.testing.assert_allclose(np.asarray(updates['batch_stats']['batch_norm_0']['mean']),
                               0.1 * mean, rtol=1e-4, atol=1e-6)


def test_mlp_block_dropout_only_in_train():
    x = np.ones((B, 5), np.float32)
    module = layers.MLPBlock(hidden_units=(64,), dropout_rate=0.5)

    @jax.jit
    def run(x):
        variables = module.init(jax.random.key(0), x, train=False)
        return (module.apply(variables, x, train=False),
                module.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)}))

    eval_out, train_out = run(x)
    assert np.any(np.asarray(train_out) == 0) and not np.allclose(eval_out, train_out)


def test_dropout_is_flax_dropout_bitwise(monkeypatch):
    """layers.dropout.Dropout (mask materialised once per step) draws flax's bits: the
    MLP's output and its gradients equal those with nn.Dropout exactly."""
    import flax.linen as nn
    from mlctr.models.layers import mlp

    x = np.random.default_rng(0).normal(size=(B, 6)).astype(np.float32)
    module = layers.MLPBlock(hidden_units=(16, 8), dropout_rate=0.3, output_dim=1)
    variables = module.init(jax.random.key(0), x, train=False)

    def loss_and_grads():
        def loss(params, x):
            out = module.apply({'params': params}, x, train=True,
                               rngs={'dropout': jax.random.key(3)})
            return jnp.sum(out ** 2)
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables['params'], x)

    ours = loss_and_grads()
    monkeypatch.setattr(mlp, 'Dropout', nn.Dropout)
    theirs = loss_and_grads()
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, theirs)
    assert float(ours[0]) > 0


# ----------------------------------------------------------------------------- FM
def test_fm_square_of_sum_identity():
    e = _emb(3)
    ref = np.zeros(B)
    for i, j in _pairs(F):
        ref += (e[:, i] * e[:, j]).sum(-1)
    np.testing.assert_allclose(np.asarray(layers.fm_product_sum(e)), ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- cross
def test_cross_net_matches_numpy():
    x0 = _emb(4, (B, 7))
    num_layers = 3
    out, p = _init_apply(layers.CrossNet(num_layers=num_layers), x0, param_shift=0.1)
    x = x0
    for l in range(num_layers):
        w = p[f'cross_weight_{l}']['kernel'][:, 0]
        b = p[f'cross_bias_{l}']
        x = x0 * (x @ w)[:, None] + b + x  # x_{l+1} = x0 (x_l . w_l) + b_l + x_l
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-5)


def test_cross_net_v2_matches_numpy():
    x0 = _emb(5, (B, 6))
    out, p = _init_apply(layers.CrossNetV2(num_layers=2), x0)
    x = x0
    for l in range(2):
        layer = p[f'cross_layer_{l}']
        x = x + x0 * (x @ layer['kernel'] + layer['bias'])
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-5)


def test_cross_net_mix_matches_numpy():
    x0 = _emb(6, (B, 6))
    num_layers, rank, experts = 2, 3, 2
    module = layers.CrossNetMix(num_layers=num_layers, low_rank=rank, num_experts=experts)
    out, p = _init_apply(module, x0, param_shift=0.05)
    x = x0
    for l in range(num_layers):
        expert_outs, gates = [], []
        for e in range(experts):
            gates.append(x @ p['gating'][e, :, 0])
            v = np.tanh(x @ p[f'V_{l}'][e])                   # V^T x  -> [B, r]
            v = np.tanh(v @ p[f'C_{l}'][e].T)                 # C v
            uv = v @ p[f'U_{l}'][e].T                         # U v    -> [B, dim]
            expert_outs.append(x0 * (uv + p[f'bias_{l}']))
        g = _softmax(np.stack(gates, 1), axis=1)            # [B, E]
        x = np.einsum('bed,be->bd', np.stack(expert_outs, 1), g) + x
    np.testing.assert_allclose(out, x, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- products
def test_inner_product_matches_numpy():
    e = _emb(7)
    ref = np.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in _pairs(F)], axis=1)
    np.testing.assert_allclose(np.asarray(layers.inner_product(e)), ref, rtol=1e-5, atol=1e-6)


def test_outer_product_matches_numpy():
    e = _emb(8)
    out, p = _init_apply(layers.OuterProduct(), e)
    kernel = p['kernel']
    assert kernel.shape == (F * (F - 1) // 2, D, D)
    ref = np.zeros((B, len(_pairs(F))))
    for k, (i, j) in enumerate(_pairs(F)):
        for b in range(B):
            outer = np.outer(e[b, i], e[b, j])                # f_i f_j^T, [D, D]
            ref[b, k] = (outer * kernel[k]).sum()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- SENET
def test_senet_matches_numpy():
    e = _emb(9, (B, 6, D))
    module = layers.SqueezeExcitation(reduction_ratio=3)
    out, p = _init_apply(module, e)
    assert p['squeeze']['kernel'].shape == (6, senet_reduced_size(6, 3)) == (6, 2)
    z = e.mean(-1)
    a = _relu(_relu(z @ p['squeeze']['kernel']) @ p['excitation']['kernel'])
    np.testing.assert_allclose(out, e * a[..., None], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- bilinear
@pytest.mark.parametrize('bilinear_type', ['field_all', 'field_each', 'field_interaction'])
def test_bilinear_matches_numpy(bilinear_type):
    e = _emb(10)
    out, p = _init_apply(layers.BilinearInteraction(bilinear_type), e)
    w = p['bilinear_W']
    ref = np.zeros((B, len(_pairs(F)), D))
    for k, (i, j) in enumerate(_pairs(F)):
        if bilinear_type == 'field_all':
            weight = w
        elif bilinear_type == 'field_each':
            weight = w[i]                                     # W of the left field
        else:
            weight = w[k]                                     # W of the pair
        ref[:, k] = (e[:, i] @ weight) * e[:, j]            # p_ij = (e_i W) * e_j
    expected_shape = {'field_all': (D, D), 'field_each': (F, D, D),
                      'field_interaction': (len(_pairs(F)), D, D)}[bilinear_type]
    assert w.shape == expected_shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6)


def test_bilinear_rejects_unknown_type():
    with pytest.raises(ValueError, match='bilinear_type'):
        layers.BilinearInteraction('field_pairs').init(jax.random.key(0), _emb())


# ----------------------------------------------------------------------------- fast paths
# The pair layers avoid gathering field pairs and CIN avoids transposing its big tensor (slow
# on CPU; see layers/product.py, layers/cin.py). Each fast path against the straightforward
# gather / einsum formula it replaces: values AND gradients (autodiff takes a different path
# through them), at field counts with no pair, one pair, and several uneven blocks.
def _vjp_pair(fast, reference, *args):
    """Jitted (value, gradients for a random cotangent) of ``fast`` and ``reference``."""

    @jax.jit
    def run(*args):
        results = []
        for fn in (fast, reference):
            out, vjp = jax.vjp(fn, *args)
            cotangent = jax.random.normal(jax.random.key(5), out.shape, out.dtype)
            results.append((out, vjp(cotangent)))
        return results

    return jax.tree_util.tree_map(np.asarray, run(*args))


def _random_params(module, *args, seed=25):
    """Random params of ``module``'s shapes (cheaper than an eager ``init``)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))['params']
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (0.5 * rng.normal(size=x.shape)).astype(np.float32), shapes)


def _assert_same(results, rtol=1e-5, atol=1e-6):
    (fast_out, fast_grads), (ref_out, ref_grads) = results
    assert fast_out.shape == ref_out.shape
    np.testing.assert_allclose(fast_out, ref_out, rtol=rtol, atol=atol)
    assert jax.tree_util.tree_structure(fast_grads) == jax.tree_util.tree_structure(ref_grads)
    for fast_grad, ref_grad in zip(jax.tree_util.tree_leaves(fast_grads),
                                   jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(fast_grad, ref_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize('num_fields', [1, 2, 5])
def test_pair_fast_paths_match_gather_formulas(num_fields):
    assert [(i, j) for i, start, count in product.pair_blocks(num_fields)
            for j in range(i + 1, i + 1 + count)] == _pairs(num_fields)
    assert [start for _, start, _ in product.pair_blocks(num_fields)] == [
        _pairs(num_fields).index((i, i + 1)) for i in range(num_fields - 1)]
    left, right = product.field_pairs(num_fields)
    e, e2 = _emb(20, (B, num_fields, D)), _emb(21, (B, num_fields, D))
    kernel = _emb(22, (len(left), D, D))
    _assert_same(_vjp_pair(layers.inner_product,
                           lambda e: jnp.sum(e[:, left] * e[:, right], -1), e))
    _assert_same(_vjp_pair(product.pairwise_product, lambda a, b: a[:, left] * b[:, right], e, e2))
    _assert_same(_vjp_pair(
        product.pairwise_bilinear,
        lambda e, w: jnp.einsum('bpk,pkl->bpl', e[:, left], w) * e[:, right], e, kernel),
        rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('bilinear_type', ['field_all', 'field_each', 'field_interaction'])
def test_pair_layers_gradients_match_gather_formulas(bilinear_type):
    e = _emb(23, (B, 5, D))
    left, right = product.field_pairs(5)
    bilinear = layers.BilinearInteraction(bilinear_type)
    w = _random_params(bilinear, e)['bilinear_W']

    def reference(e, w):
        if bilinear_type == 'field_all':
            return jnp.einsum('bpk,kl->bpl', e[:, left], w) * e[:, right]
        if bilinear_type == 'field_each':
            return jnp.einsum('bfk,fkl->bfl', e, w)[:, left] * e[:, right]
        return jnp.einsum('bpk,pkl->bpl', e[:, left], w) * e[:, right]

    _assert_same(_vjp_pair(lambda e, w: bilinear.apply({'params': {'bilinear_W': w}}, e),
                           reference, e, w), rtol=1e-4, atol=1e-5)
    outer = layers.OuterProduct()
    kernel = _random_params(outer, e)['kernel']
    _assert_same(_vjp_pair(
        lambda e, k: outer.apply({'params': {'kernel': k}}, e),
        lambda e, k: jnp.sum(jnp.einsum('bpk,pkl->bpl', e[:, left], k) * e[:, right], -1),
        e, kernel), rtol=1e-4, atol=1e-5)


def test_cin_gradients_match_einsum_formula():
    e = _emb(24)
    module = layers.CompressedInteractionNet(cin_hidden_units=(3, 2))
    params = _random_params(module, e)

    def reference(e, params):  # FuxiCTR's layout: Z [B, F*H, D], Conv1d over axis 1
        x, pooled = e, []
        for k in range(2):
            z = jnp.einsum('bhd,bmd->bhmd', e, x).reshape(B, -1, D)
            layer = params[f'cin_layer_{k}']
            x = jnp.einsum('bcd,co->bod', z, layer['kernel']) + layer['bias'][None, :, None]
            pooled.append(x.sum(-1))
        return jnp.concatenate(pooled, -1) @ params['fc']['kernel'][:, 0] + params['fc']['bias'][0]

    _assert_same(_vjp_pair(lambda e, p: module.apply({'params': p}, e), reference, e, params),
                 rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- CIN
def test_cin_matches_numpy():
    e = _emb(11)
    units = (3, 2)
    module = layers.CompressedInteractionNet(cin_hidden_units=units)
    out, p = _init_apply(module, e, param_shift=0.05)  # non-zero biases
    x, prev, pooled = e, F, []
    for k, h_k in enumerate(units):
        z = np.zeros((B, F * prev, D))
        for h in range(F):
            for m in range(prev):
                z[:, h * prev + m] = e[:, h] * x[:, m]          # Hadamard of X^0_h and X^{k-1}_m
        layer = p[f'cin_layer_{k}']
        x = np.einsum('bcd,ck->bkd', z, layer['kernel']) + layer['bias'][None, :, None]
        pooled.append(x.sum(-1))
        prev = h_k
    ref = np.concatenate(pooled, -1) @ p['fc']['kernel'][:, 0] + p['fc']['bias'][0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize('attention_dim,num_heads,use_residual,use_scale', [
    (4, 2, True, False),   # W_res projection (D=3 != 4), two heads
    (3, 1, True, True),    # identity residual (D == attention_dim), scaled
    (4, 2, False, False),  # no residual
])
def test_self_attention_matches_numpy(attention_dim, num_heads, use_residual, use_scale):
    x = _emb(12)
    module = layers.MultiHeadSelfAttention(attention_dim, num_heads, use_residual=use_residual,
                                           use_scale=use_scale)
    out, p = _init_apply(module, x, train=False)
    head_dim = attention_dim // num_heads
    q, k, v = (x @ p[n]['kernel'] for n in ('W_q', 'W_k', 'W_v'))
    ref = np.zeros((B, F, attention_dim))
    for h in range(num_heads):
        sl = slice(h * head_dim, (h + 1) * head_dim)
        scores = np.einsum('bqd,bkd->bqk', q[..., sl], k[..., sl])
        if use_scale:
            scores = scores / np.sqrt(head_dim)
        ref[..., sl] = np.einsum('bqk,bkd->bqd', _softmax(scores), v[..., sl])
    if use_residual:
        ref = ref + (x @ p['W_res']['kernel'] if 'W_res' in p else x)
    assert ('W_res' in p) == (use_residual and attention_dim != D)
    np.testing.assert_allclose(out, _relu(ref), rtol=1e-4, atol=1e-5)
