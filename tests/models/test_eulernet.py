"""EulerNet's layer and model against numpy references written from the paper's equations
(Tian et al. 2023, eq. 6-13; mlctr/models/layers/euler.py, mlctr/models/eulernet.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.models import create_model
from mlctr.models.layers import euler

B, F, D, V = 5, 4, 3, 40


def _ln(x, scale, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _euler_layer_ref(p, real, imag, layer_norm):
    """Explicit: z_o = prod_j z_j^{a_jo} in polar form, with phase and log-modulus biases;
    implicit: relu(W x + b) of each part; their sum, optionally layer-normed over D."""
    num_in = real.shape[1]
    lam = np.sqrt(real ** 2 + imag ** 2 + 1e-8)
    theta = np.arctan2(imag, real)
    num_out = p['orders'].shape[1]
    out_real, out_imag = [], []
    for o in range(num_out):
        log_mod = sum(p['orders'][j, o] * np.log(lam[:, j]) for j in range(num_in))
        phase = sum(p['orders'][j, o] * theta[:, j] for j in range(num_in))
        modulus = np.exp(log_mod + p['bias_lam'][o])
        phase = phase + p['bias_theta'][o]
        out_real.append(modulus * np.cos(phase))
        out_imag.append(modulus * np.sin(phase))
    kernel, bias = p['implicit']['kernel'], p['implicit']['bias']
    implicit = [np.maximum(x.reshape(len(x), -1) @ kernel + bias, 0).reshape(len(x), num_out, -1)
                for x in (real, imag)]
    out_real = implicit[0] + np.stack(out_real, 1)
    out_imag = implicit[1] + np.stack(out_imag, 1)
    if layer_norm:
        out_real = _ln(out_real, p['norm_real']['scale'], p['norm_real']['bias'])
        out_imag = _ln(out_imag, p['norm_imag']['scale'], p['norm_imag']['bias'])
    return out_real, out_imag


def _shifted(variables, scale=0.2, seed=3):
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)])


@pytest.mark.parametrize('num_out, layer_norm', [(F, True), (2, False)])
def test_euler_interaction_matches_numpy(num_out, layer_norm):
    rng = np.random.default_rng(0)
    real, imag = (rng.normal(size=(B, F, D)).astype(np.float32) for _ in range(2))
    layer = euler.EulerInteraction(num_out, use_layer_norm=layer_norm)
    variables = _shifted(layer.init(jax.random.key(0), real, imag, train=False))
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    got = layer.apply(variables, real, imag, train=False)
    for g, e in zip(got, _euler_layer_ref(p, real, imag, layer_norm)):
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-5)


def test_orders_of_a_product_are_learned_exactly():
    """With the implicit part off (W = 0, b = 0) and no biases, orders (2, 1) give z1^2 z2."""
    z = (np.random.default_rng(1).normal(size=(B, 2, D))
         + 1j * np.random.default_rng(2).normal(size=(B, 2, D)))
    layer = euler.EulerInteraction(1)
    variables = layer.init(jax.random.key(0), z.real.astype(np.float32),
                           z.imag.astype(np.float32), train=False)
    params = jax.tree_util.tree_map(jnp.zeros_like, variables['params'])
    params['orders'] = jnp.array([[2.0], [1.0]])
    real, imag = layer.apply({'params': params}, z.real.astype(np.float32),
                             z.imag.astype(np.float32), train=False)
    expected = z[:, 0] ** 2 * z[:, 1]
    np.testing.assert_allclose(real[:, 0], expected.real, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(imag[:, 0], expected.imag, rtol=1e-4, atol=1e-5)


def test_initialisation_as_the_authors():
    same = euler.initial_orders(jax.random.key(0), (F, F))
    np.testing.assert_array_equal(same, np.eye(F))
    fewer = np.asarray(euler.initial_orders(jax.random.key(0), (F, 2)))
    np.testing.assert_allclose(fewer.sum(0), 1.0, rtol=1e-6)      # softmax over the inputs
    assert np.all(fewer.max(0) > 0.99)                              # temperature 0.01: ~one-hot
    layer = euler.EulerInteraction(7)
    x = np.zeros((B, 30, 2), np.float32)
    p = layer.init(jax.random.key(0), x, x, train=False)['params']
    bound = 1 / np.sqrt(60)
    assert np.all(np.abs(p['implicit']['bias']) <= bound) and np.std(p['implicit']['bias']) > 0
    assert abs(np.std(p['implicit']['kernel']) - np.sqrt(2 / (60 + 14))) < 0.02  # xavier
    assert abs(float(np.std(p['bias_lam'])) - 0.01) < 0.005


def test_eulernet_model_matches_numpy():
    model = create_model('eulernet', vocab_size=V, num_fields=F, embedding_dim=D, shape=(3, 2),
                         net_ex_dropout=0.0, net_im_dropout=0.0, layer_norm=True)
    ids = np.random.default_rng(4).integers(0, V, (B, F)).astype(np.int32)
    variables = model.init(jax.random.key(0), ids, train=False)
    variables = {'params': {**variables['params'], 'embedding': {'embedding_table': (
        jax.random.normal(jax.random.key(5), (V, D)))}}}
    variables = _shifted(variables, scale=0.1)
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    e = p['embedding']['embedding_table'][ids]
    real, imag = p['mu'] * np.cos(e), p['mu'] * np.sin(e)
    real, imag = _euler_layer_ref(p['euler_0'], real, imag, True)
    real, imag = _euler_layer_ref(p['euler_1'], real, imag, True)
    w, b = p['fc']['kernel'][:, 0], p['fc']['bias'][0]
    expected = real.reshape(B, -1) @ w + b + imag.reshape(B, -1) @ w + b
    got = model.apply(variables, jnp.asarray(ids), train=False)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)
