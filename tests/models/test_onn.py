"""ONN's operation-aware interaction and model against numpy references written from the
paper's definition (one embedding per field and operation), and its memory refusal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr.data.reader import PreparedDataset
from mlctr.models import create_model
from mlctr.models import onn
from mlctr.models.layers.field_aware import operation_aware_products
from mlctr.run import errors
from mlctr.run import train

B, F, D, V = 5, 4, 3, 50


def _reference_products(tables, ids):
    """F separate tables [V, D]: table 0 holds each value's copy; field i's embedding for its
    inner product with field j is in table j if i < j, table j + 1 if i > j (the others in
    field order after the copy). Pairs i < j in row-major order."""
    out = []
    for i in range(F):
        for j in range(i + 1, F):
            v_ij = tables[j][ids[:, i]]        # field i, operation "with j"
            v_ji = tables[i + 1][ids[:, j]]    # field j, operation "with i"
            out.append(np.sum(v_ij * v_ji, -1))
    return np.stack(out, 1)


def test_operation_aware_products_match_the_per_table_loops():
    rng = np.random.default_rng(0)
    tables = rng.normal(size=(F, V, D)).astype(np.float32)
    ids = rng.integers(0, V, (B, F))
    # e[b, f, t] = table t's row of field f's value.
    field_aware = np.stack([np.stack([tables[t][ids[:, f]] for t in range(F)], 1)
                            for f in range(F)], 1)
    got = jax.jit(operation_aware_products)(field_aware)
    np.testing.assert_allclose(got, _reference_products(tables, ids), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='need F = 4 per field'):
        operation_aware_products(jnp.zeros((B, F, F - 1, D)))


def test_onn_model_matches_numpy():
    model = create_model('onn', vocab_size=V, num_fields=F, embedding_dim=D,
                         dnn_hidden_units=(6,), net_dropout=0.0, batch_norm=False)
    ids = np.random.default_rng(1).integers(0, V, (B, F)).astype(np.int32)
    variables = model.init(jax.random.key(0), ids, train=False)
    variables = jax.tree_util.tree_map(
        lambda x: x + 0.3 * jax.random.normal(jax.random.key(2), x.shape), variables)
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    table = p['embedding']['embedding_table']
    assert table.shape == (V, F * D)       # F tables of [V, D], side by side
    tables = table.reshape(V, F, D).transpose(1, 0, 2)
    copies = tables[0][ids].reshape(B, -1)
    x = np.concatenate([copies, _reference_products(tables, ids)], 1)
    h = np.maximum(x @ p['dnn']['dense_0']['kernel'] + p['dnn']['dense_0']['bias'], 0)
    expected = h @ p['dnn']['output']['kernel'][:, 0] + p['dnn']['output']['bias'][0]
    got = model.apply(variables, jnp.asarray(ids), train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_onn_too_large_for_the_device_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(onn, 'device_memory_bytes', lambda: 16 * 2**30)
    # BARS Avazu_x4_001: 3,750,999 ids x 24 fields x 8 = 10.7 GiB to train: fits in 16 GiB.
    create_model('onn', vocab_size=3_750_999, num_fields=24, embedding_dim=8)
    with pytest.raises(ValueError) as error:
        create_model('onn', vocab_size=3_750_999, num_fields=24, embedding_dim=16)
    message = str(error.value)
    assert '\n' not in message
    assert '5.4 GiB table, 21.5 GiB with its gradient and Adam moments, over the 16.0 GiB' in message


def test_a_run_with_an_onn_too_large_stops_with_one_run_error(monkeypatch, tiny_config):
    monkeypatch.setattr(onn, 'device_memory_bytes', lambda: 1000)
    config = tiny_config(peers='onn,deepfm')
    with pytest.raises(errors.RunError, match=r'^config\.models: ONN: .* over the 0\.0 GiB'):
        train.build_run(config, PreparedDataset(config.data.data_dir))


def test_onn_table_initialised_as_fuxictrs_tables():
    model = create_model('onn', vocab_size=3000, num_fields=6, embedding_dim=4,
                         dnn_hidden_units=(8,))
    p = model.init(jax.random.key(0), jnp.zeros((2, 6), jnp.int32), train=False)['params']
    table = p['embedding']['embedding_table']
    assert table.shape == (3000, 24) and abs(float(jnp.std(table)) - 1e-4) < 1e-6
