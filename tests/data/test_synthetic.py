"""The ground-truth synthetic generator (mlctr.data.synthetic and its modules)."""

import numpy as np
import pytest

from mlctr.data import avazu, criteo, parsing, synthetic
from mlctr.data.synthetic import marginals
from mlctr.data.synthetic import text


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
    generator = synthetic.Generator(synthetic.SyntheticSpec("criteo", 10_000, 3))
    rng = np.random.default_rng(0)
    hidden = generator.hidden
    parts = hidden.parts(generator.draw(rng, 4096).ids) * hidden.scales[:, None]
    stds = parts.std(axis=1)
    np.testing.assert_allclose(stds, [synthetic.SIGNAL[k] for k in ("linear", "fm", "deep")],
                               rtol=0.1)


def test_token_formatting_round_trips():
    values = np.array([0, 7, 10, 9999, 10000, 123456, 99_999_999, -1, -3, -9_999_999])
    words, lengths = text.int_tokens(values)
    texts = [int(w).to_bytes(8, "little")[:n].decode() for w, n in zip(words, lengths)]
    assert texts == [str(v) for v in values]
    hexes = text.hex_words(np.array([0, 0xDEADBEEF, 0x0123ABCD], np.uint64))
    assert [int(w).to_bytes(8, "little").decode() for w in hexes] == [
        "00000000", "deadbeef", "0123abcd"]


@pytest.mark.parametrize("raw_format", ["criteo", "avazu"])
def test_text_encodes_the_value_ids(raw_format):
    # The raw text of a chunk, parsed back, matches the ids the labels came from: the
    # integers through the BARS bucketing, every other value one-to-one with its id.
    generator = synthetic.Generator(synthetic.SyntheticSpec(raw_format, 200_000, 5))
    module = criteo if raw_format == "criteo" else avazu
    text, probs, positives = generator.chunk(3, 4000)
    expected = generator.draw(np.random.default_rng([5, 2, 3]), 4000).ids - generator.offsets
    data = text.tobytes()
    if raw_format == "avazu":
        data = avazu.HEADER + b"\n" + data
    parsed = module.parse_chunk("x", parsing.RawChunk(data, 1, data.count(b"\n"), False))
    assert parsed.first_error is None and len(parsed.labels) == 4000
    assert parsed.labels.sum() == positives and probs.shape == (4000,)
    for f, field in enumerate(generator.fields):
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
    generator = synthetic.Generator(synthetic.SyntheticSpec(raw_format, 50_000, 4))
    block = generator.draw(np.random.default_rng(0), 3000)
    np.testing.assert_allclose(generator.hidden.fast_logits(block.columns),
                               generator.hidden.logits(block.ids), rtol=1e-5, atol=1e-5)


def test_quantile_cells_missing_shares_and_values():
    cells = marginals.quantile_cells(
        [(0.25, 0), (0.125, 7)], lambda k: np.linspace(10, 10 + 4 * k, k + 1).astype(np.int64))
    bits = np.random.default_rng(0).integers(0, 2**32, (1, 200_000), dtype=np.uint64)
    values = marginals.sample(cells, np.zeros((1, 1), np.uint32), bits.astype(np.uint32))[0]
    assert abs((values == 0).mean() - 0.25) < 0.005 and abs((values == 7).mean() - 0.125) < 0.005
    rest = values[values >= 10]
    assert rest.max() < 10 + 4 * (marginals.QUANTILE_CELLS - 1024 - 512)
    assert marginals.cell_max(cells) == 10 + 4 * (marginals.QUANTILE_CELLS - 1024 - 512) - 1
    # Uniform within the continuous part: every value between 10 and the top appears.
    assert len(np.unique(rest)) > 0.9 * min(len(rest), 4 * 2560)


def test_normal_quantiles_match_statistics():
    import statistics

    p = np.array([1e-6, 0.01, 0.07, 0.3, 0.5, 0.8, 0.93, 0.999, 1 - 1e-6])
    expected = [statistics.NormalDist().inv_cdf(float(x)) for x in p]
    np.testing.assert_array_equal(marginals.normal_quantiles(p), expected)


# The generator without the diversity knob, as recorded on 2026-12-03 (3000 rows, seed 7):
# sha256 of the raw text, and the sum and first true probabilities. The probabilities
# are compared to float32 rounding, not bitwise, since numpy's exp may differ in the
# last bit between CPU instruction sets.
_RECORDED = {
    "criteo": ("0c885f6e830dd41f548b97c32e0de1b2069e8b281c0d4c1715b1c7bdc1ccc221",
               732.2232518948149, [0.6165996789932251, 0.4333093762397766, 0.09317276626825333]),
    "avazu": ("bad09033e67c361e2f98105ab76e6062bc3db73cadb7f2c6131fac1004244f0d",
              735.9357730355114, [0.08385144174098969, 0.6344151496887207, 0.2729298174381256]),
}


@pytest.mark.parametrize("raw_format", ["criteo", "avazu"])
def test_diversity_zero_reproduces_the_recorded_generator(tmp_path, raw_format):
    import hashlib

    digest, total, first = _RECORDED[raw_format]
    path = str(tmp_path / "raw.txt")
    description = synthetic.generate(path, num_rows=3000, seed=7, raw_format=raw_format,
                                     diversity=0.0)
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == digest
    probs = np.load(synthetic.true_prob_path(path))
    np.testing.assert_allclose(probs.astype(np.float64).sum(), total, rtol=1e-6)
    np.testing.assert_allclose(probs[:3], first, rtol=1e-6)
    # Without the knob the description is the one it always was.
    assert "diversity" not in description["spec"]
    assert "parts" not in description["hidden_function"]


@pytest.mark.parametrize("diversity", [0.5, 2.0])
def test_each_architecture_part_is_present(diversity):
    generator = synthetic.Generator(synthetic.SyntheticSpec("criteo", 20_000, 3,
                                                            diversity=diversity))
    hidden = generator.hidden
    assert hidden.part_names == ("linear", "fm", "deep", "cross", "inner", "bilinear", "deep")
    block = generator.draw(np.random.default_rng(0), 8192)
    parts = hidden.parts(block.ids) * hidden.scales[:, None]
    stds = parts.std(axis=1)
    shared = np.array([synthetic.SIGNAL[k] for k in ("linear", "fm", "deep")])
    total = np.sum(shared ** 2)
    expected = np.concatenate([shared / np.sqrt(1 + diversity),
                               np.full(4, np.sqrt(total * diversity / (1 + diversity) / 4))])
    np.testing.assert_allclose(stds, expected, rtol=0.15)
    # Each part is its own function: no part is (nearly) a multiple of another.
    correlation = np.corrcoef(parts)
    np.fill_diagonal(correlation, 0)
    assert np.abs(correlation).max() < 0.6, correlation.round(2)
    # The share of the variance the architecture parts carry is d / (1 + d).
    share = parts[3:].sum(axis=0).var() / parts.sum(axis=0).var()
    assert abs(share - diversity / (1 + diversity)) < 0.1
    # The fast path (what the files hold) is the same function.
    np.testing.assert_allclose(hidden.fast_logits(block.columns), hidden.logits(block.ids),
                               rtol=1e-4, atol=1e-4)


def test_cross_part_is_a_bounded_degree_polynomial():
    # Scaling every field's per-value cross parameters by c scales the part by c^3.
    generator = synthetic.Generator(synthetic.SyntheticSpec("criteo", 20_000, 3, diversity=1.0))
    specific = generator.hidden.specific
    columns = generator.draw(np.random.default_rng(1), 500).columns
    before = specific.cross(columns)
    specific._cross.table *= 2.0
    np.testing.assert_allclose(specific.cross(columns), 8.0 * before, rtol=1e-4, atol=1e-5)


def test_diversity_is_deterministic_and_keeps_the_rows(tmp_path, synthetic_criteo):
    first, again = str(tmp_path / "a.txt"), str(tmp_path / "b.txt")
    description = synthetic.generate(first, num_rows=3000, seed=7, diversity=1.0)
    synthetic.generate(again, num_rows=3000, seed=7, diversity=1.0, num_threads=1)
    for suffix in ("", ".true_prob.npy"):
        assert open(first + suffix, "rb").read() == open(again + suffix, "rb").read()
    assert description["spec"]["diversity"] == 1.0
    assert set(description["hidden_function"]["parts"]) == {"cross", "inner", "bilinear", "deep"}
    # The knob changes the click function only: the same rows (features), other labels.
    def features(path):
        return [line.split(b"\t", 1)[1] for line in open(path, "rb")]
    assert features(first) == features(synthetic_criteo)
    probs = np.load(synthetic.true_prob_path(first))
    base = np.load(synthetic.true_prob_path(synthetic_criteo))
    assert 0.2 < np.corrcoef(probs, base)[0, 1] < 0.95
    other = str(tmp_path / "c.txt")
    synthetic.generate(other, num_rows=3000, seed=8, diversity=1.0)
    assert open(other, "rb").read() != open(first, "rb").read()


def test_negative_diversity_is_refused():
    with pytest.raises(ValueError, match="diversity must be >= 0"):
        synthetic.SyntheticSpec("criteo", 100, 0, diversity=-1.0)
