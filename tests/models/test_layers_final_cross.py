"""The layers of FinalMLP, FinalNet, GDCN and DCNv3 against numpy references written here from
the papers' equations, on tiny shapes."""

import jax
import numpy as np
import pytest

from mlctr.models import layers

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
