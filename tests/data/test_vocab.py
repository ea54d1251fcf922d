"""KeyCoder (dense and hash modes) and vocabulary fitting (mlctr.data.vocab)."""

import numpy as np
import pytest

from mlctr.data import vocab


@pytest.mark.parametrize("spread", [50, 1 << 40])  # dense mode, hash mode
def test_key_coder_matches_a_dict(spread):
    rng = np.random.default_rng(0)
    coder = vocab.KeyCoder(dense_limit=1 << 10)
    expected: dict[int, int] = {}
    for _ in range(20):
        keys = rng.zipf(1.3, 3000) * (spread // 50) - 7 * spread
        codes = coder.encode(keys)
        for key, code in zip(keys.tolist(), codes.tolist()):
            assert expected.setdefault(key, code) == code
    assert sorted(expected.values()) == list(range(len(coder)))
    np.testing.assert_array_equal(coder.code_keys()[list(expected.values())],
                                  list(expected.keys()))


def test_key_coder_switches_from_dense_to_hash_keeping_codes():
    coder = vocab.KeyCoder(dense_limit=100)
    first = coder.encode(np.array([5, 6, 7, 5]))
    coder.encode(np.array([10**12, -(10**12)]))
    np.testing.assert_array_equal(coder.encode(np.array([5, 6, 7])), first[:3])
    assert len(coder) == 5


def test_fit_vocabulary_min_count_missing_and_encode():
    code_keys = np.array([30, 10, 20, 0, 40])
    counts = np.array([5, 1, 2, 9, 2])
    keys, local = vocab.fit_vocabulary(code_keys, counts, min_count=2, missing_key=0)
    assert keys.tolist() == [20, 30, 40]
    assert local.tolist() == [2, 0, 1, 0, 3]
    assert vocab.encode_keys(keys, np.array([20, 40, 10, 0, 99])).tolist() == [1, 3, 0, 0, 0]
    assert vocab.encode_keys(keys[:0], np.array([1, 2])).tolist() == [0, 0]


def test_key_coder_hash_table_growth_sentinel_and_collisions():
    # Many keys (the table grows through the small/large load limits), key 0 (the
    # value of the empty slots' sentinel), negative and colliding keys.
    rng = np.random.default_rng(1)
    coder = vocab.KeyCoder(dense_limit=16)
    expected: dict[int, int] = {}
    pool = np.concatenate([[0, -1, -(2**63), 2**63 - 1], np.arange(1, 2**20, 2**12) << 40,
                           rng.integers(-(2**63), 2**63 - 1, 20_000, dtype=np.int64)])
    for size in (10, 1000, 30_000, 30_000, 5):
        keys = np.concatenate([pool[:4], rng.choice(pool, size)])
        codes = coder.encode(keys)
        for key, code in zip(keys.tolist(), codes.tolist()):
            assert expected.setdefault(key, code) == code
    assert len(coder) == len(expected)
    np.testing.assert_array_equal(coder.code_keys()[list(expected.values())],
                                  list(expected.keys()))
    np.testing.assert_array_equal(coder.encode(pool[:4]), [expected[k] for k in pool[:4].tolist()])


def test_counts_add_small_and_large_codes():
    rng = np.random.default_rng(2)
    counts = vocab.Counts()
    expected = np.zeros(200_000, np.int64)
    for _ in range(5):
        codes = np.concatenate([rng.integers(0, 50, 3000), rng.integers(0, 200_000, 300)])
        codes = rng.permutation(codes).astype(np.int32)
        counts.add(codes, 200_000)
        np.add.at(expected, codes, 1)
    counts.add(np.zeros(0, np.int32), 200_000)
    np.testing.assert_array_equal(counts.counts[:200_000], expected)
