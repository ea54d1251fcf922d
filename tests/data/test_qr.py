"""Quotient-remainder table rows: one pair per id, disjoint fields, the combiners."""

import numpy as np
import pytest

from mlctr.models import qr

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


def test_jnp_rows_agree_with_numpy_rows_inside_jit():
    jax = pytest.importorskip("jax")
    layout = qr.QRLayout.from_fields(FIELDS, collisions=4)
    rng = np.random.default_rng(0)
    ids = np.stack([rng.integers(f["offset"], f["offset"] + f["vocab_size"], 257)
                    for f in FIELDS], 1).astype(np.int32)
    got = np.asarray(jax.jit(layout.jnp_rows)(ids))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, layout.rows(ids))
    # Out-of-field ids (an eval batch's id-0 padding) get the same rows on both sides too.
    padding = np.zeros((3, len(FIELDS)), np.int32)
    np.testing.assert_array_equal(np.asarray(layout.jnp_rows(padding)), layout.rows(padding))


def test_layout_covers_the_feature_map_and_checks_its_arguments():
    layout = qr.QRLayout.from_fields(FIELDS, collisions=2000, combiner="sum")
    assert layout.vocab_size == 1014 and layout.combiner == "sum"
    # m >= every field's size: one quotient row per field, the remainders one row per id.
    assert layout.num_rows == 1014 + len(FIELDS)
    with pytest.raises(ValueError, match="unknown qr combiner 'concat'"):
        qr.QRLayout.from_fields(FIELDS, 4, combiner="concat")
    with pytest.raises(ValueError, match="collisions must be an integer >= 1"):
        qr.QRLayout.from_fields(FIELDS, 2.5)
