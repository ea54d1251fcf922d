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
