"""Ground-truth synthetic CTR data in the raw Criteo (or Avazu) format.

`generate` writes a raw file that `prepare` reads exactly like the Kaggle file, plus
each row's true click probability (`<raw>.true_prob.npy`) and a description
(`<raw>.json`), so every model can be judged against the Bayes-optimal AUC and logloss.

Marginals (per field, scaled down for small files):
* categorical values follow a truncated power law (Zipf-like, exponent 1.05 to 1.6 per
  field) over a per-field cardinality from 3 to 10^6 at full size (45.8M rows; the
  Criteo cardinalities, capped at 10^6), scaled by sqrt(rows / 45.8M); values are
  8-hex-digit strings (a bijective 32-bit scramble of the rank, so no two ranks share a
  string); some fields are often missing, with Criteo's missing shares;
* integers are log-normal counts (heavy-tailed, up to 10^8), some missing, and I2 has a
  few negative values, as in Criteo;
* about 25% positives.

Hidden CTR function, over what a model sees after BARS preprocessing (integers through
the Criteo bucketing, a categorical value by its identity): every (field, value) has a
weight w and a latent vector v (dimension LATENT_DIM), and

    logit = bias + a_lin * sum_f w_f                          (all fields)
                 + a_fm * sum_{f<g in FM} <v_f, v_g>          (FM_FIELDS fields)
                 + a_deep * MLP(concat_{f in DEEP} v_f)       (DEEP_FIELDS fields,
                                                               one hidden ReLU layer)

The interacting fields are drawn among those with at most INTERACTION_MAX_CARDINALITY
values at full size, so that their values recur often enough to be learnt. A linear
model learns the first-order part and the main effects hidden in the others, not the
interactions; values from the long tail are seen too rarely to learn (or fall below
min_count into OOV), so good models stay below Bayes. The scales a_* are set on a fixed
calibration sample so that each part has the standard deviation given in `SIGNAL`, and
the bias so that the mean probability is `positive_rate`.

Everything is deterministic in (format, rows, seed, signal): rows are generated in
chunks of CHUNK_ROWS from per-chunk random streams (so also independent of the number
of threads), vectorised: column values from quantile tables of 32 random bits, text as
8-byte words scattered into place (`join_tokens`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import gzip
import json
import os
import statistics

import numpy as np

from mlctr.data import avazu, criteo

GENERATOR_VERSION = 1
FULL_ROWS = 45_840_617  # rows of the Criteo Kaggle train.txt
MAX_CARDINALITY = 1_000_000
CHUNK_ROWS = 1 << 13
LATENT_DIM = 4
HIDDEN_UNITS = 16
FM_FIELDS = 12        # fields in the pairwise (FM) part
DEEP_FIELDS = 6       # fields the MLP part reads
INTERACTION_MAX_CARDINALITY = 20_000
CALIBRATION_ROWS = 1 << 15
# Standard deviations of the three logit parts (see module docstring). With these, on
# 500k Criteo-format rows (x4_001): Bayes AUC 0.819 (valid), logistic regression 0.762,
# DeepFM (16-dim embeddings, DNN 200x3, batch 1024, 2 epochs) 0.788: models differ,
# and there is headroom below Bayes.
SIGNAL = {"linear": 0.8, "fm": 0.9, "deep": 0.8}
POSITIVE_RATE = 0.25

# Criteo: (cardinality of the full file, share missing) of C1..C26.
_CRITEO_CATEGORICAL = [
    (1460, 0.0), (583, 0.0), (10131227, 0.03), (2202608, 0.03), (305, 0.0), (24, 0.12),
    (12517, 0.0), (633, 0.0), (3, 0.0), (93145, 0.0), (5683, 0.0), (8351593, 0.03),
    (3194, 0.0), (27, 0.0), (14992, 0.0), (5461306, 0.03), (10, 0.0), (5652, 0.0),
    (2173, 0.44), (4, 0.44), (7046547, 0.03), (18, 0.76), (15, 0.0), (286181, 0.03),
    (105, 0.44), (142572, 0.44)]
# Criteo: (log-normal mu, sigma, share missing, share negative) of I1..I13.
_CRITEO_INTEGER = [
    (0.6, 1.2, 0.45, 0.0), (1.5, 1.8, 0.0, 0.05), (2.0, 1.4, 0.21, 0.0), (1.6, 1.0, 0.22, 0.0),
    (7.5, 1.8, 0.03, 0.0), (3.2, 1.8, 0.22, 0.0), (1.4, 1.6, 0.04, 0.0), (2.2, 1.1, 0.0005, 0.0),
    (3.6, 1.5, 0.04, 0.0), (0.5, 0.6, 0.45, 0.0), (1.1, 0.9, 0.04, 0.0), (0.2, 1.0, 0.77, 0.0),
    (1.6, 1.0, 0.22, 0.0)]
# Avazu: (column, kind, cardinality of the full 40.4M-row file, first integer value).
_AVAZU_COLUMNS = [
    ("C1", "int", 7, 1001), ("banner_pos", "int", 7, 0), ("site_id", "hex", 4737, 0),
    ("site_domain", "hex", 7745, 0), ("site_category", "hex", 26, 0),
    ("app_id", "hex", 8552, 0), ("app_domain", "hex", 559, 0),
    ("app_category", "hex", 36, 0), ("device_id", "hex", 2686408, 0),
    ("device_ip", "hex", 6729486, 0), ("device_model", "hex", 8251, 0),
    ("device_type", "int", 5, 0), ("device_conn_type", "int", 4, 0),
    ("C14", "int", 2626, 375), ("C15", "int", 8, 120), ("C16", "int", 9, 20),
    ("C17", "int", 435, 112), ("C18", "int", 4, 0), ("C19", "int", 68, 33),
    ("C20", "int", 172, 100000), ("C21", "int", 60, 1)]
_AVAZU_FULL_ROWS = 40_428_967
_AVAZU_FIRST_DAY = datetime.date(2014, 10, 21)
_AVAZU_DAYS = 10
_INT_BUCKET_OFFSET = 4  # bucket ids start at -3 (negative integers)
_INT_BUCKETS = _INT_BUCKET_OFFSET + 400


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What determines a synthetic file.

    Attributes:
        raw_format: "criteo" or "avazu".
        num_rows: rows to generate.
        seed: random seed.
        signal_linear, signal_fm, signal_deep: standard deviations of the logit parts.
        positive_rate: target mean click probability.
    """

    raw_format: str
    num_rows: int
    seed: int
    signal_linear: float = SIGNAL["linear"]
    signal_fm: float = SIGNAL["fm"]
    signal_deep: float = SIGNAL["deep"]
    positive_rate: float = POSITIVE_RATE

    def to_json(self) -> dict:
        """The spec as saved in the description (with the generator version)."""
        return {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}


def spec_path(raw_path: str) -> str:
    """The JSON description written next to a generated raw file."""
    return raw_path + ".json"


def true_prob_path(raw_path: str) -> str:
    """The float32 [rows] true click probabilities written next to a raw file."""
    return raw_path + ".true_prob.npy"


# ---------------------------------------------------------------------------
# Text tokens: each raw column value is one little-endian uint64 word of at most 8
# bytes plus a length; lines are assembled by scattering the words at their offsets.


def _pack(text: bytes) -> int:
    return int.from_bytes(text, "little")


_DECIMAL_WORDS = np.array([_pack(str(v).encode()) for v in range(10_000)], np.uint64)
_DECIMAL_LENGTHS = np.array([len(str(v)) for v in range(10_000)], np.int64)
_PADDED4_WORDS = np.array([_pack(f"{v:04d}".encode()) for v in range(10_000)], np.uint64)
_MINUS = np.uint64(ord("-"))


def _int_tokens(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal text words and lengths of integers in [-9_999_999, 99_999_999]."""
    magnitude = np.abs(values)
    high, low = np.divmod(magnitude, 10_000)
    high_lengths = _DECIMAL_LENGTHS[high]
    long = high > 0
    words = np.where(long, _DECIMAL_WORDS[high] | (_PADDED4_WORDS[low] << (
        8 * high_lengths).astype(np.uint64)), _DECIMAL_WORDS[low])
    lengths = np.where(long, high_lengths + 4, _DECIMAL_LENGTHS[low])
    negative = values < 0
    if negative.any():
        words = np.where(negative, (words << np.uint64(8)) | _MINUS, words)
        lengths = lengths + negative
    return words, lengths


def _padded8_words(values: np.ndarray) -> np.ndarray:
    """8-digit zero-padded decimal words of integers in [0, 10^8)."""
    high, low = np.divmod(values, 10_000)
    return _PADDED4_WORDS[high] | (_PADDED4_WORDS[low] << np.uint64(32))


def _hex_words(values: np.ndarray) -> np.ndarray:
    """8-hex-digit lowercase text words of uint32 values (SWAR nibble spreading)."""
    x = values.astype(np.uint64)
    x = (x | (x << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x | (x << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    x = x.byteswap()  # most significant nibble first
    letters = ((x + np.uint64(0x0606060606060606)) >> np.uint64(4)) & np.uint64(0x0101010101010101)
    return x + np.uint64(0x3030303030303030) + letters * np.uint64(ord("a") - ord("0") - 10)


def join_tokens(words: np.ndarray, lengths: np.ndarray, separators: np.ndarray) -> bytes:
    """Assembles lines from per-column text words, vectorised.

    Args:
        words: uint64 [n, T] little-endian text of each token (at most 8 bytes).
        lengths: int [n, T] bytes of each token.
        separators: uint8 [T] byte written after each token (0: none).

    Returns:
        The n lines as bytes.
    """
    n, num_tokens = words.shape
    sizes = lengths + (separators != 0)
    ends = np.cumsum(sizes.reshape(-1))
    total = int(ends[-1]) if len(ends) else 0
    out = np.zeros(total + 8, np.uint8)
    view = np.ndarray(shape=(total + 1,), dtype="<u8", buffer=out, strides=(1,))
    # In index order each word's spill past its end is overwritten by the next word.
    view[ends - sizes.reshape(-1)] = words.reshape(-1)
    ends = ends.reshape(n, num_tokens)
    first = int(np.argmax(separators != 0))  # tokens without separator come first
    out[ends[:, first:] - 1] = separators[first:]
    return out[:total].tobytes()


# ---------------------------------------------------------------------------
# Field layout and the hidden CTR function.
#
# Every random column value is drawn from 32 random bits through a quantile table of
# QUANTILE_CELLS cells: the top bits pick a cell of equal probability, the low bits a
# point inside it, interpolated linearly between the cell's bounds. That is the
# power-law (categorical ranks) or log-normal (integers) inverse CDF, exact at the cell
# bounds, at the cost of a few integer operations per value instead of logarithms.

QUANTILE_BITS = 12
QUANTILE_CELLS = 1 << QUANTILE_BITS
_FRACTION_BITS = 32 - QUANTILE_BITS


@dataclasses.dataclass
class _Field:
    """One model-visible field of the hidden function."""
    name: str
    num_ids: int            # value ids 0..num_ids-1
    zipf_exponent: float = 0.0
    cardinality: int = 0    # distinct non-missing values (categorical fields)
    missing: float = 0.0
    full_cardinality: int = 0  # at full size (picks the interacting fields)


def _scaled_cardinality(full: int, num_rows: int, full_rows: int) -> int:
    full = min(full, MAX_CARDINALITY)
    scaled = int(round(full * min(1.0, (num_rows / full_rows) ** 0.5)))
    return max(min(full, 10), scaled)


def _fields(spec: SyntheticSpec, rng: np.random.Generator) -> list[_Field]:
    fields = []
    if spec.raw_format == "criteo":
        for name in criteo.INT_COLUMNS:
            fields.append(_Field(name, _INT_BUCKETS))
        exponents = rng.uniform(1.05, 1.6, len(_CRITEO_CATEGORICAL))
        for name, (full, missing), s in zip(criteo.STR_COLUMNS, _CRITEO_CATEGORICAL, exponents):
            k = _scaled_cardinality(full, spec.num_rows, FULL_ROWS)
            fields.append(_Field(name, k + 1, float(s), k, missing, full))
    elif spec.raw_format == "avazu":
        fields.append(_Field("hour", 24))
        exponents = rng.uniform(1.05, 1.6, len(_AVAZU_COLUMNS))
        for (name, _, full, _), s in zip(_AVAZU_COLUMNS, exponents):
            k = _scaled_cardinality(full, spec.num_rows, _AVAZU_FULL_ROWS)
            fields.append(_Field(name, k + 1, float(s), k, 0.0, full))
        fields.append(_Field("weekday", 7))
        fields.append(_Field("weekend", 2))
    else:
        raise ValueError(f"unknown synthetic raw_format {spec.raw_format!r}")
    return fields


def _zipf_table(cardinality: int, exponent: float) -> np.ndarray:
    """Quantile table of ranks 0..K-1 of a truncated continuous power law."""
    q = np.arange(QUANTILE_CELLS + 1) / QUANTILE_CELLS
    scale = (cardinality + 1.0) ** (1.0 - exponent) - 1.0
    ranks = np.floor(np.exp(np.log1p(scale * q) / (1.0 - exponent)) - 1.0)
    ranks[-1] = cardinality
    return np.clip(ranks, 0, cardinality).astype(np.int64)


def _lognormal_table(mu: float, sigma: float) -> np.ndarray:
    """Quantile table of floor(exp(N(mu, sigma))), capped below 10^8."""
    normal = statistics.NormalDist()
    q = np.clip(np.arange(QUANTILE_CELLS + 1) / QUANTILE_CELLS, 1e-6, 1 - 1e-6)
    z = np.array([normal.inv_cdf(float(p)) for p in q])
    return np.minimum(np.floor(np.exp(mu + sigma * z)), 99_999_999).astype(np.int64)


def _sample(tables: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Values from quantile tables [k, CELLS + 1] and uint64 random bits [n, k]."""
    low = (bits & np.uint64(0xFFFFFFFF)).view(np.int64)
    cell = low >> _FRACTION_BITS
    cell += np.arange(0, tables.size, tables.shape[1])
    low &= (1 << _FRACTION_BITS) - 1
    flat = tables.reshape(-1)
    start = np.take(flat, cell)
    step = np.take(flat, cell + 1)
    step -= start
    step *= low
    step >>= _FRACTION_BITS
    step += start
    return step


def _bernoulli(bits: np.ndarray, probability: np.ndarray, shift: int) -> np.ndarray:
    """True with `probability` per column, from 16 of the random bits."""
    threshold = np.round(np.asarray(probability) * 65536).astype(np.uint64)
    return ((bits >> np.uint64(shift)) & np.uint64(0xFFFF)) < threshold


def _scramble32(ranks: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """A bijection of uint32 per column (distinct ranks give distinct hex strings)."""
    x = (ranks.astype(np.uint64) + salt.astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    for multiplier in (0x7FEB352D, 0x846CA68B):
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(multiplier)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x


@dataclasses.dataclass
class _Block:
    """A block of generated rows before labelling.

    Attributes:
        ids: int64 [n, F] global value ids (index into the parameter table).
        words, lengths: text tokens [n, T] (the label token left to fill).
        label_token: index of the label token.
    """
    ids: np.ndarray
    words: np.ndarray
    lengths: np.ndarray
    label_token: int


class HiddenFunction:
    """The known click model: parameters of every (field, value id), and the raw text.

    Args:
        spec: what to generate.
    """

    def __init__(self, spec: SyntheticSpec):
        rng = np.random.default_rng([spec.seed, 0])
        self.spec = spec
        self.fields = _fields(spec, rng)
        sizes = np.array([f.num_ids for f in self.fields])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        total = int(sizes.sum())
        importance = np.repeat(rng.uniform(0.2, 1.0, len(self.fields)), sizes).astype(np.float32)
        # Per (field, value id): a weight and a latent vector.
        params = rng.standard_normal((total, 1 + LATENT_DIM), np.float32) * importance[:, None]
        self.weights = np.ascontiguousarray(params[:, 0])
        self.latents = np.ascontiguousarray(params[:, 1:]) / np.float32(np.sqrt(LATENT_DIM))
        # The interactions involve a few fields each, drawn among those with at most
        # INTERACTION_MAX_CARDINALITY values at full size (and the integer / time
        # fields): enough data per value to learn them, as in real CTR data, where
        # interactions of frequent features carry most of the learnable signal.
        pool = [i for i, f in enumerate(self.fields)
                if f.full_cardinality <= INTERACTION_MAX_CARDINALITY]
        self.fm_fields = np.sort(rng.choice(pool, FM_FIELDS, replace=False))
        self.deep_fields = np.sort(rng.choice(pool, DEEP_FIELDS, replace=False))
        width = DEEP_FIELDS * LATENT_DIM
        self.hidden_w = rng.standard_normal((width, HIDDEN_UNITS), np.float32) / np.sqrt(width)
        self.hidden_b = (0.5 * rng.standard_normal(HIDDEN_UNITS)).astype(np.float32)
        self.out_w = rng.standard_normal(HIDDEN_UNITS).astype(np.float32)
        categorical = [f for f in self.fields if f.cardinality]
        self._zipf = np.stack([_zipf_table(f.cardinality, f.zipf_exponent) for f in categorical])
        self._missing = np.array([f.missing for f in categorical])
        salts = rng.integers(0, 2**32, len(categorical), dtype=np.uint64)
        # The text of every categorical value: 8 hex digits, as one word.
        self._hex_offsets = np.concatenate([[0], np.cumsum([f.cardinality for f in categorical])])
        self._hex = np.concatenate([
            _hex_words(_scramble32(np.arange(f.cardinality), salt))
            for f, salt in zip(categorical, salts)])
        if spec.raw_format == "criteo":
            self._lognormal = np.stack([_lognormal_table(mu, sigma)
                                        for mu, sigma, _, _ in _CRITEO_INTEGER])
        self.scales = np.ones(3, np.float32)
        self.bias = np.float32(0.0)
        self._calibrate()

    # -- drawing rows --------------------------------------------------------------

    def _categorical(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value ids, hex words, missing) of the categorical columns."""
        ranks = _sample(self._zipf, bits)
        missing = _bernoulli(bits, self._missing, 32)
        value_ids = np.where(missing, 0, ranks + 1)
        return value_ids, ranks, missing

    def draw(self, rng: np.random.Generator, n: int) -> _Block:
        """Value ids and raw text tokens of n fresh rows."""
        if self.spec.raw_format == "criteo":
            return self._draw_criteo(rng, n)
        return self._draw_avazu(rng, n)

    def _draw_criteo(self, rng: np.random.Generator, n: int) -> _Block:
        num_int, num_cat = len(_CRITEO_INTEGER), len(_CRITEO_CATEGORICAL)
        bits = rng.bit_generator.random_raw(n * (num_int + num_cat)).reshape(n, -1)
        int_bits, cat_bits = bits[:, :num_int], bits[:, num_int:]
        _, _, int_missing, negative_share = zip(*_CRITEO_INTEGER)
        values = _sample(self._lognormal, int_bits)
        # A few small negative values (Criteo's I2): -1, -2 or -3.
        negative = _bernoulli(int_bits, negative_share, 48)
        if negative.any():
            values = np.where(negative, -1 - (int_bits >> np.uint64(40)).astype(np.int64) % 3,
                              values)
        missing_int = _bernoulli(int_bits, int_missing, 32)
        buckets = criteo.bucketize(np.where(missing_int, 0, values))
        int_ids = np.clip(buckets + _INT_BUCKET_OFFSET, 0, _INT_BUCKETS - 1)
        cat_ids, ranks, missing_cat = self._categorical(cat_bits)
        ids = np.concatenate([int_ids, cat_ids], axis=1) + self.offsets

        words = np.empty((n, 1 + num_int + num_cat), np.uint64)
        lengths = np.empty((n, 1 + num_int + num_cat), np.int64)
        int_words, int_lengths = _int_tokens(values)
        words[:, 1:1 + num_int] = int_words
        lengths[:, 1:1 + num_int] = np.where(missing_int, 0, int_lengths)
        words[:, 1 + num_int:] = self._hex[ranks + self._hex_offsets[:-1]]
        lengths[:, 1 + num_int:] = np.where(missing_cat, 0, 8)
        return _Block(ids, words, lengths, 0)

    def _draw_avazu(self, rng: np.random.Generator, n: int) -> _Block:
        num_cat = len(_AVAZU_COLUMNS)
        bits = rng.bit_generator.random_raw(n * (num_cat + 2)).reshape(n, -1)
        time_bits = bits[:, -1]
        day = ((time_bits & np.uint64(0xFFFFFFFF)) * np.uint64(_AVAZU_DAYS)) >> np.uint64(32)
        hour = ((time_bits >> np.uint64(32)) * np.uint64(24)) >> np.uint64(32)
        day, hour = day.astype(np.int64), hour.astype(np.int64)
        dates = [_AVAZU_FIRST_DAY + datetime.timedelta(days=d) for d in range(_AVAZU_DAYS)]
        date_code = np.array([(d.year % 100) * 10**6 + d.month * 10**4 + d.day * 100
                              for d in dates])
        weekday = np.array([int(d.strftime("%w")) for d in dates])[day]
        cat_ids, ranks, _ = self._categorical(bits[:, :num_cat])
        ids = np.concatenate([hour[:, None], cat_ids, weekday[:, None],
                              ((weekday == 0) | (weekday == 6)).astype(np.int64)[:, None]],
                             axis=1) + self.offsets
        # Tokens: id (two 8-digit words), click, hour, then the 21 columns.
        words = np.zeros((n, 4 + num_cat), np.uint64)
        lengths = np.zeros((n, 4 + num_cat), np.int64)
        row_ids = (bits[:, -2] % np.uint64(9 * 10**15)).astype(np.int64) + 10**15
        words[:, 0], lengths[:, 0] = _int_tokens(row_ids // 10**8)
        words[:, 1], lengths[:, 1] = _padded8_words(row_ids % 10**8), 8
        words[:, 3], lengths[:, 3] = _int_tokens(date_code[day] + hour)
        hex_words = self._hex[ranks + self._hex_offsets[:-1]]
        for j, (name, kind, _, first_value) in enumerate(_AVAZU_COLUMNS):
            if kind == "hex":
                words[:, 4 + j], lengths[:, 4 + j] = hex_words[:, j], 8
            else:
                values = first_value + ranks[:, j]
                if name == "C20":  # Avazu's C20 uses -1 for its most common value
                    values = np.where(ranks[:, j] == 0, -1, values)
                words[:, 4 + j], lengths[:, 4 + j] = _int_tokens(values)
        return _Block(ids, words, lengths, 2)

    def separators(self) -> np.ndarray:
        """The byte after each text token."""
        if self.spec.raw_format == "criteo":
            separators = np.full(1 + len(_CRITEO_INTEGER) + len(_CRITEO_CATEGORICAL),
                                 ord(criteo.DELIMITER), np.uint8)
        else:
            separators = np.full(4 + len(_AVAZU_COLUMNS), ord(avazu.DELIMITER), np.uint8)
            separators[0] = 0  # the two words of the id
        separators[-1] = ord("\n")
        return separators

    # -- the click model -----------------------------------------------------------

    def parts(self, ids: np.ndarray) -> np.ndarray:
        """float32 [3, n]: the unscaled linear, FM and MLP parts of the logit."""
        n = len(ids)
        linear = np.take(self.weights, ids).sum(axis=1)
        latents = np.take(self.latents, ids[:, self.fm_fields], axis=0)  # [n, f, k]
        latent_sum = latents.sum(axis=1)
        fm = 0.5 * (np.einsum("nk,nk->n", latent_sum, latent_sum)
                    - np.einsum("nfk,nfk->n", latents, latents))
        deep_in = np.take(self.latents, ids[:, self.deep_fields], axis=0).reshape(n, -1)
        hidden = np.maximum(deep_in @ self.hidden_w + self.hidden_b, 0.0)
        return np.stack([linear, fm, hidden @ self.out_w])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """float32 [n] true logits of rows with global value ids [n, F]."""
        return self.bias + self.scales @ self.parts(ids)

    def _calibrate(self) -> None:
        rng = np.random.default_rng([self.spec.seed, 1])
        parts = self.parts(self.draw(rng, CALIBRATION_ROWS).ids)
        targets = np.array([self.spec.signal_linear, self.spec.signal_fm,
                            self.spec.signal_deep], np.float32)
        self.scales = (targets / np.maximum(parts.std(axis=1), 1e-6)).astype(np.float32)
        logits = self.scales @ parts
        low, high = -20.0, 20.0
        for _ in range(50):  # bisection on the bias for the target positive rate
            mid = 0.5 * (low + high)
            if np.mean(_sigmoid(logits + mid)) < self.spec.positive_rate:
                low = mid
            else:
                high = mid
        self.bias = np.float32(0.5 * (low + high))

    def chunk(self, index: int, num_rows: int) -> tuple[bytes, np.ndarray, int]:
        """Generates chunk `index` (rows index*CHUNK_ROWS ...): (text, probs, positives)."""
        rng = np.random.default_rng([self.spec.seed, 2, index])
        block = self.draw(rng, num_rows)
        probs = _sigmoid(self.logits(block.ids))
        labels = rng.random(num_rows, np.float32) < probs
        block.words[:, block.label_token] = np.where(labels, ord("1"), ord("0"))
        block.lengths[:, block.label_token] = 1
        text = join_tokens(block.words, block.lengths, self.separators())
        return text, probs, int(labels.sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


# ---------------------------------------------------------------------------
# Generation.


def generate(path: str, *, num_rows: int, seed: int = 2018, raw_format: str = "criteo",
             num_threads: int = 2, **signal) -> dict:
    """Writes a synthetic raw file, its true probabilities and its description.

    Skips the work when `path` already holds a file generated with the same spec.
    Chunks are generated in `num_threads` threads (numpy releases the GIL) and written
    in order; the output does not depend on the number of threads.

    Args:
        path: the raw file to write (gzip-compressed if it ends in ".gz").
        num_rows: rows to generate (> 0).
        seed: random seed (the same seed gives the same bytes).
        raw_format: "criteo" (Kaggle train.txt) or "avazu" (Kaggle train.csv).
        num_threads: generator threads.
        **signal: overrides of SyntheticSpec fields (signal_linear, signal_fm,
            signal_deep, positive_rate).

    Returns:
        The description saved at `spec_path(path)`: the spec, the realised positive
        rate and mean true probability, and the hidden function's scales.
    """
    if num_rows <= 0:
        raise ValueError(f"num_rows must be positive, got {num_rows}")
    spec = SyntheticSpec(raw_format=raw_format, num_rows=int(num_rows), seed=int(seed), **signal)
    existing = read_spec(path)
    if (existing is not None and existing["spec"] == spec.to_json()
            and os.path.exists(path) and os.path.exists(true_prob_path(path))):
        return existing
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.exists(spec_path(path)):
        os.remove(spec_path(path))
    hidden = HiddenFunction(spec)
    tmp_path, tmp_prob = path + ".tmp", true_prob_path(path) + ".tmp.npy"
    probs = np.lib.format.open_memmap(tmp_prob, mode="w+", dtype=np.float32, shape=(num_rows,))
    positives = 0
    if path.endswith(".gz"):
        handle = gzip.open(tmp_path, "wb", compresslevel=4)
    else:
        handle = open(tmp_path, "wb")
    starts = range(0, num_rows, CHUNK_ROWS)
    with handle, concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        if raw_format == "avazu":
            handle.write(avazu.HEADER + b"\n")
        pending = collections.deque()
        for index, start in enumerate(starts):
            pending.append((start, pool.submit(hidden.chunk, index,
                                               min(CHUNK_ROWS, num_rows - start))))
            while pending and (len(pending) > 2 * num_threads or index == len(starts) - 1):
                chunk_start, future = pending.popleft()
                text, chunk_probs, chunk_positives = future.result()
                probs[chunk_start:chunk_start + len(chunk_probs)] = chunk_probs
                positives += chunk_positives
                handle.write(text)
    probs.flush()
    mean_prob = float(np.mean(probs, dtype=np.float64))
    del probs
    os.replace(tmp_prob, true_prob_path(path))
    os.replace(tmp_path, path)
    description = {"spec": spec.to_json(), "positive_rate": positives / num_rows,
                   "mean_true_prob": mean_prob,
                   "hidden_function": {"latent_dim": LATENT_DIM, "hidden_units": HIDDEN_UNITS,
                                       "scales": [float(s) for s in hidden.scales],
                                       "bias": float(hidden.bias),
                                       "cardinalities": {f.name: f.cardinality
                                                         for f in hidden.fields
                                                         if f.cardinality}}}
    tmp_spec = spec_path(path) + ".tmp"
    with open(tmp_spec, "w", encoding="utf-8") as f:
        json.dump(description, f, indent=2)
        f.write("\n")
    os.replace(tmp_spec, spec_path(path))
    return description


def read_spec(path: str) -> dict | None:
    """The description of a generated file, or None when there is none."""
    try:
        with open(spec_path(path), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
