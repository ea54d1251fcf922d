"""The layers of FinalMLP, FinalNet, GDCN and DCNv3 against numpy references written here from
the papers' equations, on tiny shapes."""

import jax
import numpy as np
import pytest

from mlctr.models import layers
from mlctr.models.dcnv3 import multihead_inputs

B, F, D = 6, 4, 4
RTOL, ATOL = 1e-4, 1e-5


def _x(seed=0, shape=(B, F * D)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _init_apply(module, *args, param_shift=0.0, **kwargs):
    """Initialises ``module``, shifts every parameter by ``param_shift`` (zero-initialised
    biases exercised too), applies it; one jitted call. Returns (numpy output, numpy params)."""

    @jax.jit
    def run(*args):
        variables = module.init(jax.random.key(0), *args, **kwargs)
        variables = jax.tree_util.tree_map(lambda x: x + param_shift, variables)
        return variables, module.apply(variables, *args, **kwargs)

    variables, out = run(*args)
    return (jax.tree_util.tree_map(np.asarray, out),
            jax.tree_util.tree_map(np.asarray, variables['params']))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- GDCN
def test_gated_cross_net_matches_numpy():
    x0 = _x(1)
    num_layers = 3
    out, p = _init_apply(layers.GatedCrossNet(num_layers=num_layers), x0)
    x = x0
    for l in range(num_layers):
        # GDCN eq. 1: c_{l+1} = c0 * (W_l c_l + b_l) * sigmoid(W^g_l c_l) + c_l
        w, wg = p[f'cross_weight_{l}']['kernel'], p[f'gate_weight_{l}']['kernel']
        x = x0 * (x @ w + p[f'cross_bias_{l}']) * _sigmoid(x @ wg) + x
    np.testing.assert_allclose(out, x, rtol=RTOL, atol=ATOL)


def test_gated_cross_net_initialisation():
    """Weights xavier_normal (no bias), the cross bias uniform(0, 1) as the authors' code."""
    dim = 200
    p = jax.jit(lambda x: layers.GatedCrossNet(num_layers=1).init(jax.random.key(0), x))(
        np.zeros((1, dim), np.float32))['params']
    assert set(p) == {'cross_weight_0', 'gate_weight_0', 'cross_bias_0'}
    assert set(p['cross_weight_0']) == {'kernel'}
    assert abs(float(np.std(p['gate_weight_0']['kernel'])) / np.sqrt(2 / (2 * dim)) - 1) < 0.02
    bias = np.asarray(p['cross_bias_0'])
    assert bias.min() >= 0 and bias.max() < 1 and abs(bias.mean() - 0.5) < 0.1


# ----------------------------------------------------------------------------- FinalMLP
def _mlp(x, p, hidden):
    for i in range(hidden):
        x = np.maximum(x @ p[f'dense_{i}']['kernel'] + p[f'dense_{i}']['bias'], 0)
    return x


def test_feature_selection_gate_matches_numpy():
    width, context_dim = F * D, D
    gate = layers.FeatureSelectionGate(width, context_dim, hidden_units=(5,))
    out, p = _init_apply(gate, param_shift=0.3)  # a non-zero context: the hidden layer lives
    hidden = _mlp(p['context'], p['mlp'], 1)
    expected = 2 * _sigmoid(hidden @ p['mlp']['output']['kernel'] + p['mlp']['output']['bias'])
    assert out.shape == (width,)
    np.testing.assert_allclose(out, expected[0], rtol=RTOL, atol=ATOL)


def test_feature_selection_gate_zero_context_trains_only_the_output_bias():
    """As FuxiCTR's (zero context vector, ReLU hidden layer at exactly 0): at initialisation
    every gate is 1 and only the output bias gets a gradient."""
    gate = layers.FeatureSelectionGate(F * D, D, hidden_units=(5,))
    params = gate.init(jax.random.key(0))['params']
    np.testing.assert_array_equal(np.asarray(gate.apply({'params': params})), 1.0)
    grads = jax.grad(lambda p: jax.numpy.sum(gate.apply({'params': p}) ** 2))(params)
    nonzero = {jax.tree_util.keystr(path) for path, g in jax.tree_util.tree_leaves_with_path(grads)
               if np.any(np.asarray(g) != 0)}
    assert nonzero == {"['mlp']['output']['bias']"}


@pytest.mark.parametrize('num_heads', [1, 2])
def test_interaction_aggregation_matches_numpy(num_heads):
    x, y = _x(2, (B, 6)), _x(3, (B, 4))
    out, p = _init_apply(layers.InteractionAggregation(num_heads), x, y, param_shift=0.1)
    expected = (x @ p['w_x']['kernel'] + p['w_x']['bias']
                + y @ p['w_y']['kernel'] + p['w_y']['bias'])[:, 0]
    dx, dy = 6 // num_heads, 4 // num_heads
    for b in range(B):
        for h in range(num_heads):
            xh, yh = x[b, h * dx:(h + 1) * dx], y[b, h * dy:(h + 1) * dy]
            expected[b] += xh @ p['w_xy'][h] @ yh
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_interaction_aggregation_init_and_head_check():
    x, y = np.zeros((2, 40), np.float32), np.zeros((2, 60), np.float32)
    p = layers.InteractionAggregation(4).init(jax.random.key(0), x, y)['params']
    assert p['w_xy'].shape == (4, 10, 15)
    # torch's xavier fans for FuxiCTR's [H*dx*dy, 1] tensor.
    assert abs(float(np.std(p['w_xy'])) / np.sqrt(2 / (1 + 600)) - 1) < 0.1
    with pytest.raises(ValueError, match='num_heads=7'):
        layers.InteractionAggregation(7).init(jax.random.key(0), x, y)


# ----------------------------------------------------------------------------- FinalNet
@pytest.mark.parametrize('residual_type', ['concat', 'sum'])
def test_factorized_interaction_matches_numpy(residual_type):
    x = _x(4)
    out, p = _init_apply(layers.FactorizedInteraction(6, residual_type), x, param_shift=0.1)
    h = x @ p['linear']['kernel'] + p['linear']['bias']
    half = h.shape[-1] // 2
    h2, h1 = h[:, :half], h[:, half:]
    expected = np.concatenate([h2, h1 * h2], -1) if residual_type == 'concat' else h2 + h1 * h2
    assert out.shape == (B, 6)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_final_block_matches_numpy_in_train_mode():
    x = _x(5)
    block = layers.FinalBlock((6, 4), batch_norm=True)
    variables = block.init(jax.random.key(0), x, train=False)
    out, _ = block.apply(variables, x, train=True, mutable=['batch_stats'])
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    h = x
    for i in range(2):
        h = h @ p[f'layer_{i}']['linear']['kernel'] + p[f'layer_{i}']['linear']['bias']
        half = h.shape[-1] // 2
        h = np.concatenate([h[:, :half], h[:, half:] * h[:, :half]], -1)
        h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)  # batch statistics, scale 1, bias 0
        h = np.maximum(h, 0)
    np.testing.assert_allclose(np.asarray(out), h, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('gate_residual', ['concat', 'sum'])
def test_field_gate_matches_numpy(gate_residual):
    e = _x(6, (B, F, D))
    out, p = _init_apply(layers.FieldGate(gate_residual), e, param_shift=0.2)
    gates = np.einsum('bfd,fg->bgd', e, p['kernel']) + p['bias'][None, :, None]
    for g in range(F):  # gate g of coordinate d: sum_f e[b, f, d] W[f, g] + bias[g]
        np.testing.assert_allclose(gates[:, g], (e * p['kernel'][None, :, g, None]).sum(1)
                                   + p['bias'][g], rtol=RTOL, atol=ATOL)
    expected = (np.concatenate([e, e * gates], 1) if gate_residual == 'concat'
                else e + e * gates)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_field_gate_starts_as_identity_gates():
    e = _x(7, (B, F, D))
    out, p = _init_apply(layers.FieldGate('concat'), e)
    np.testing.assert_array_equal(p['kernel'], 0.0)
    np.testing.assert_array_equal(p['bias'], 1.0)
    np.testing.assert_allclose(out, np.concatenate([e, e], 1), rtol=RTOL)


# ----------------------------------------------------------------------------- DCNv3
def _layer_norm(h, scale, bias, eps=1e-5):
    return (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + eps) * scale + bias


@pytest.mark.parametrize('exponential,layer_norm', [(True, True), (False, True), (True, False)])
def test_self_mask_cross_net_matches_numpy(exponential, layer_norm):
    x0 = _x(8, (B, 2, 6))  # two heads of width 6
    num_layers = 3
    module = layers.SelfMaskCrossNet(num_layers, exponential, layer_norm=layer_norm)
    out, p = _init_apply(module, x0, train=False, param_shift=0.05)
    x = x0
    for l in range(num_layers):
        h = x @ p[f'cross_weight_{l}']['kernel']                        # W_l x_l, [B, H, 3]
        masked = (_layer_norm(h, p[f'layer_norm_{l}']['scale'], p[f'layer_norm_{l}']['bias'])
                  if layer_norm else h)
        c = np.concatenate([h, h * np.maximum(masked, 0)], -1)           # [h, h * Mask(h)]
        base = x if exponential else x0                                  # ECN: x_l, LCN: x0
        x = base * (c + p[f'cross_bias_{l}']) + x
    np.testing.assert_allclose(out, x, rtol=RTOL, atol=ATOL)


def test_self_mask_cross_net_batch_norm_over_heads():
    x0 = _x(9, (B, 3, 4))
    module = layers.SelfMaskCrossNet(1, exponential=False, layer_norm=False, batch_norm=True)
    variables = module.init(jax.random.key(0), x0, train=False)
    out, _ = module.apply(variables, x0, train=True, mutable=['batch_stats'])
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    h = x0 @ p['cross_weight_0']['kernel']
    mean, var = h.mean((0, 2), keepdims=True), h.var((0, 2), keepdims=True)  # per head
    h = (h - mean) / np.sqrt(var + 1e-5)
    c = np.concatenate([h, h * np.maximum(h, 0)], -1)
    np.testing.assert_allclose(np.asarray(out), x0 * (c + p['cross_bias_0']) + x0,
                               rtol=1e-3, atol=1e-4)


def test_multihead_inputs_layout():
    num_heads, dim = 2, 4
    emb = _x(10, (B, F, dim * num_heads))
    out = np.asarray(multihead_inputs(emb, num_heads))
    assert out.shape == (B, num_heads, F * dim)
    for h in range(num_heads):
        piece = emb[:, :, h * dim:(h + 1) * dim]                         # [B, F, D]
        expected = np.concatenate([piece[:, :, :dim // 2].reshape(B, -1),
                                   piece[:, :, dim // 2:].reshape(B, -1)], -1)
        np.testing.assert_array_equal(out[:, h], expected)


def test_self_mask_cross_net_initialisation():
    """W xavier_normal [dim, dim/2] without bias, the bias uniform(0, 1), layer norm 1 / 0."""
    dim = 300
    p = jax.jit(lambda x: layers.SelfMaskCrossNet(1, exponential=True).init(
        jax.random.key(0), x, train=False))(np.zeros((1, 1, dim), np.float32))['params']
    assert set(p['cross_weight_0']) == {'kernel'} and p['cross_weight_0']['kernel'].shape == (
        dim, dim // 2)
    assert abs(float(np.std(p['cross_weight_0']['kernel'])) / np.sqrt(2 / (1.5 * dim)) - 1) < 0.02
    bias = np.asarray(p['cross_bias_0'])
    assert bias.min() >= 0 and bias.max() < 1 and abs(bias.mean() - 0.5) < 0.1
    np.testing.assert_array_equal(p['layer_norm_0']['scale'], 1.0)
    np.testing.assert_array_equal(p['layer_norm_0']['bias'], 0.0)
