"""The ground-truth synthetic generator (mlctr.data.synthetic)."""

import numpy as np

from mlctr.data import avazu, criteo, parsing, synthetic


def _parse(module, path):
    parts = [module.parse_chunk(path, c) for c in parsing.RawFile(path).chunks()]
    assert all(p.first_error is None for p in parts), [p.first_error for p in parts]
    return np.concatenate([p.keys for p in parts]), np.concatenate([p.labels for p in parts])


def test_deterministic_in_seed_and_threads(tmp_path, synthetic_criteo):
    again = str(tmp_path / "again.txt")
    synthetic.generate(again, num_rows=3000, seed=7, num_threads=1)
    for suffix in ("", ".true_prob.npy"):
        assert open(again + suffix, "rb").read() == open(synthetic_criteo + suffix, "rb").read()
    other = str(tmp_path / "other.txt")
    synthetic.generate(other, num_rows=3000, seed=8)
    assert open(other, "rb").read() != open(synthetic_criteo, "rb").read()


def test_criteo_format_marginals(synthetic_criteo):
    keys, labels = _parse(criteo, synthetic_criteo)
    description = synthetic.read_spec(synthetic_criteo)
    probs = np.load(synthetic.true_prob_path(synthetic_criteo))
    assert keys.shape == (3000, 39) and probs.shape == (3000,) and probs.dtype == np.float32
    assert 0.2 < labels.mean() < 0.3 and abs(probs.mean() - 0.25) < 0.03
    assert description["positive_rate"] == labels.mean()
    assert 0 < (keys[:, 13:] == 0).mean() < 0.3  # some missing strings
    with open(synthetic_criteo, "rb") as f:
        first = f.readline().rstrip(b"\n").split(b"\t")
    assert len(first) == 40 and first[0] in (b"0", b"1")
    assert all(len(c) in (0, 8) for c in first[14:])
    # Zipf-like: the most frequent value of a big field is far above the median one.
    _, counts = np.unique(keys[:, 13 + 2], return_counts=True)
    assert counts.max() > 20 * np.median(counts)
    # The labels follow the true probabilities.
    assert labels[probs > 0.5].mean() > labels[probs < 0.1].mean() + 0.3


def test_avazu_format_parses(synthetic_avazu):
    keys, labels = _parse(avazu, synthetic_avazu)
    assert keys.shape == (3000, 24)
    with open(synthetic_avazu, "rb") as f:
        assert f.readline().rstrip(b"\n") == avazu.HEADER
    assert set(np.unique(keys[:, -1])) <= {0, 1} and keys[:, 0].max() <= 23
    assert 0.2 < labels.mean() < 0.3


def test_hidden_function_needs_interactions():
    hidden = synthetic.HiddenFunction(synthetic.SyntheticSpec("criteo", 10_000, 3))
    rng = np.random.default_rng(0)
    parts = hidden.parts(hidden.draw(rng, 4096).ids) * hidden.scales[:, None]
    stds = parts.std(axis=1)
    np.testing.assert_allclose(stds, [synthetic.SIGNAL[k] for k in ("linear", "fm", "deep")],
                               rtol=0.1)


def test_token_formatting_round_trips():
    values = np.array([0, 7, 10, 9999, 10000, 123456, 99_999_999, -1, -3, -9_999_999])
    words, lengths = synthetic._int_tokens(values)
    texts = [int(w).to_bytes(8, "little")[:n].decode() for w, n in zip(words, lengths)]
    assert texts == [str(v) for v in values]
    hexes = synthetic._hex_words(np.array([0, 0xDEADBEEF, 0x0123ABCD], np.uint64))
    assert [int(w).to_bytes(8, "little").decode() for w in hexes] == [
        "00000000", "deadbeef", "0123abcd"]
