"""The ground-truth synthetic generator (mlctr.data.synthetic)."""

import numpy as np
import pytest

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


@pytest.mark.parametrize("raw_format", ["criteo", "avazu"])
def test_text_encodes_the_value_ids(raw_format):
    # The raw text of a chunk, parsed back, matches the ids the labels came from: the
    # integers through the BARS bucketing, every other value one-to-one with its id.
    hidden = synthetic.HiddenFunction(synthetic.SyntheticSpec(raw_format, 200_000, 5))
    module = criteo if raw_format == "criteo" else avazu
    text, probs, positives = hidden.chunk(3, 4000)
    expected = hidden.draw(np.random.default_rng([5, 2, 3]), 4000).ids - hidden.offsets
    data = text.tobytes()
    if raw_format == "avazu":
        data = avazu.HEADER + b"\n" + data
    parsed = module.parse_chunk("x", parsing.RawChunk(data, 1, data.count(b"\n"), False))
    assert parsed.first_error is None and len(parsed.labels) == 4000
    assert parsed.labels.sum() == positives and probs.shape == (4000,)
    for f, field in enumerate(hidden.fields):
        keys, ids = parsed.keys[:, f], expected[:, f]
        if raw_format == "criteo" and f < len(criteo.INT_COLUMNS):
            np.testing.assert_array_equal(np.clip(keys + 4, 0, 403), ids, err_msg=field.name)
            continue
        pairs = np.unique(np.stack([keys, ids], axis=1), axis=0)
        assert len(pairs) == len(np.unique(keys)) == len(np.unique(ids)), field.name
        if field.cardinality and raw_format == "criteo":  # missing: "" (key 0), id 0
            np.testing.assert_array_equal(keys == 0, ids == 0, err_msg=field.name)


@pytest.mark.parametrize("raw_format", ["criteo", "avazu"])
def test_fast_logits_match_the_hidden_function(raw_format):
    hidden = synthetic.HiddenFunction(synthetic.SyntheticSpec(raw_format, 50_000, 4))
    block = hidden.draw(np.random.default_rng(0), 3000)
    np.testing.assert_allclose(hidden.fast_logits(block), hidden.logits(block.ids),
                               rtol=1e-5, atol=1e-5)


def test_quantile_cells_missing_shares_and_values():
    cells = synthetic._quantile_cells(
        [(0.25, 0), (0.125, 7)], lambda k: np.linspace(10, 10 + 4 * k, k + 1).astype(np.int64))
    bits = np.random.default_rng(0).integers(0, 2**32, (1, 200_000), dtype=np.uint64)
    values = synthetic._sample(cells, np.zeros((1, 1), np.uint32), bits.astype(np.uint32))[0]
    assert abs((values == 0).mean() - 0.25) < 0.005 and abs((values == 7).mean() - 0.125) < 0.005
    rest = values[values >= 10]
    assert rest.max() < 10 + 4 * (synthetic.QUANTILE_CELLS - 1024 - 512)
    assert synthetic._cell_max(cells) == 10 + 4 * (synthetic.QUANTILE_CELLS - 1024 - 512) - 1
    # Uniform within the continuous part: every value between 10 and the top appears.
    assert len(np.unique(rest)) > 0.9 * min(len(rest), 4 * 2560)


def test_normal_quantiles_match_statistics():
    import statistics

    p = np.array([1e-6, 0.01, 0.07, 0.3, 0.5, 0.8, 0.93, 0.999, 1 - 1e-6])
    expected = [statistics.NormalDist().inv_cdf(float(x)) for x in p]
    np.testing.assert_array_equal(synthetic._normal_quantiles(p), expected)
