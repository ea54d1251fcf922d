"""Quotient-remainder table rows: one pair per id, disjoint fields, the combiners."""

import numpy as np
import pytest

from mlctr.data import qr

FIELDS = [{"name": "a", "vocab_size": 10, "offset": 0},
          {"name": "b", "vocab_size": 3, "offset": 10},
          {"name": "c", "vocab_size": 1001, "offset": 13}]


def test_rows_are_a_unique_pair_per_id_in_the_fields_own_rows():
    layout = qr.QRLayout.from_fields(FIELDS, collisions=4)
    # a: 3 quotient + 4 remainder rows; b: 1 + 3; c: 251 + 4.
    assert layout.num_rows == 7 + 4 + 255
    ids = np.stack([np.arange(1001) % 10, 10 + np.arange(1001) % 3, 13 + np.arange(1001)], 1)
    rows = layout.rows(ids)
    assert rows.shape == (1001, 6) and rows.dtype == np.int32
    assert rows.min() == 0 and rows.max() == layout.num_rows - 1
    for f, field in enumerate(FIELDS):
        q, r = rows[:, 2 * f], rows[:, 2 * f + 1]
        pairs = set(zip(q.tolist(), r.tolist()))
        assert len(pairs) == len(set(ids[:, f].tolist()))  # no two ids share a pair
        own = set(q.tolist()) | set(r.tolist())
        others = set(rows[:, [g for g in range(6) if g // 2 != f]].ravel().tolist())
        assert not own & others
    local = ids[:, 2] - 13
    np.testing.assert_array_equal(rows[:, 4] - rows[:, 4].min(), local // 4)
    np.testing.assert_array_equal(rows[:, 5] - rows[:, 5].min(), local % 4)


def test_combine_product_and_sum():
    emb = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    np.testing.assert_array_equal(qr.combine(emb, "product"), emb[:, 0::2] * emb[:, 1::2])
    np.testing.assert_array_equal(qr.combine(emb, "sum"), emb[:, 0::2] + emb[:, 1::2])
    jnp = pytest.importorskip("jax.numpy")
    np.testing.assert_allclose(np.asarray(qr.combine(jnp.asarray(emb), "product")),
                               emb[:, 0::2] * emb[:, 1::2])
    with pytest.raises(ValueError, match="unknown qr combiner"):
        qr.combine(emb, "concat")
    with pytest.raises(ValueError, match="collisions"):
        qr.QRLayout.from_fields(FIELDS, 0)
