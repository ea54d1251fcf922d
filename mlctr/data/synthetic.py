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
of threads), vectorised and field-major (one array row per column): each value from
one 32-bit random number through a quantile table (missing values included), its text
from a lookup table (hex strings, decimal integers with their separator) written into
fixed-width slots of a uint8 row matrix whose NUL padding one boolean mask strips, the
true probability from per-value tables (the hidden function regrouped, see
`HiddenFunction.fast_logits`). About 2 CPU-seconds per million Criteo rows, writing
included (GENERATOR_VERSION 1, same design with per-value formatting: about 6.5).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import gzip
import json
import os
import threading

import numpy as np

from mlctr import xla_cpu
from mlctr.data import avazu, criteo

GENERATOR_VERSION = 2
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
# Text. Every raw column value is one little-endian uint64 word of at most 8 bytes of
# text, NUL-padded, looked up in a table built once (hex strings, decimal integers with
# their separator). A chunk's rows are assembled in a fixed-width uint8 matrix with one
# slot per column: a word whose text and separator fit in 8 bytes is written with its
# separator (an unaligned 8-byte store through a strided view; its NUL bytes spill into
# the next slot, which is written after it), an 8-byte word then its separator byte.
# One boolean mask then strips the NUL padding of all rows at once.


def _pack(text: bytes) -> int:
    return int.from_bytes(text, "little")


_DECIMAL_WORDS = np.array([_pack(str(v).encode()) for v in range(10_000)], np.uint64)
_DECIMAL_LENGTHS = np.array([len(str(v)) for v in range(10_000)], np.int64)
_PADDED4_WORDS = np.array([_pack(f"{v:04d}".encode()) for v in range(10_000)], np.uint64)
_MINUS = np.uint64(ord("-"))
_TAB, _COMMA, _NEWLINE = ord("\t"), ord(","), ord("\n")


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


def _with_separator(words: np.ndarray, lengths: np.ndarray, separator: int) -> np.ndarray:
    """Text words with `separator` appended (text of at most 7 bytes)."""
    if len(lengths) and lengths.max() > 7:
        raise ValueError("text too long for an 8-byte word with its separator")
    return words | (np.uint64(separator) << (8 * np.asarray(lengths)).astype(np.uint64))


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


_ROWS = threading.local()


def _row_matrix(n: int, width: int) -> np.ndarray:
    """A uint8 [n, width] matrix reused by the calling thread (contents undefined)."""
    buffer = getattr(_ROWS, "buffer", None)
    if buffer is None or len(buffer) < n * width:
        buffer = _ROWS.buffer = np.empty(max(n, CHUNK_ROWS) * width, np.uint8)
    return buffer[:n * width].reshape(n, width)


def _store_words(rows: np.ndarray, offset: int, words: np.ndarray, stride: int = 9) -> None:
    """Writes words [n] or [n, k] (uint64) at byte `offset` (+ j * stride) of every row."""
    n, width = rows.shape
    words = words.reshape(n, -1)
    view = np.ndarray((n, words.shape[1]), "<u8", rows, offset, (width, stride))
    view[...] = words


def _store_bytes(rows: np.ndarray, offset: int, values, count: int = 1,
                 stride: int = 9) -> None:
    """Writes bytes [n] / [count] / [n, count] at `offset` (+ j * stride) of every row."""
    n, width = rows.shape
    view = np.ndarray((n, count), np.uint8, rows, offset, (width, stride))
    view[...] = np.reshape(values, (n, count) if np.size(values) == n * count else (count,))


def _strip(rows: np.ndarray) -> np.ndarray:
    """The rows' text without the NUL padding, as uint8."""
    flat = rows.reshape(-1)
    return flat[flat != 0]


# ---------------------------------------------------------------------------
# Field layout and the hidden CTR function.
#
# Every random column value is drawn from one 64-bit random word through a quantile
# table of QUANTILE_CELLS cells of equal probability: the top bits pick a cell, the low
# bits a point inside it, interpolated linearly between the cell's bounds. That is the
# inverse CDF of the column's distribution, exact at the cell bounds, at the cost of a
# few integer operations per value instead of logarithms. Missing values (and Criteo's
# few negative integers) are leading runs of constant cells of the same tables, so one
# draw gives the value, missing or not.

QUANTILE_BITS = 12
QUANTILE_CELLS = 1 << QUANTILE_BITS
_FRACTION_BITS = 20
_CELL_SHIFT = np.uint32(32 - QUANTILE_BITS)
_FRACTION_MASK = np.uint32((1 << _FRACTION_BITS) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)
_LOW48 = np.uint64((1 << 48) - 1)
# Criteo integers are drawn as v + 4 (v >= -3; 0: missing); below _DECIMAL_TABLE their
# text (with the tab) and bucket id come from one table lookup.
_INT_SHIFT = 4
_DECIMAL_TABLE = 100_000 + _INT_SHIFT


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


def _zipf_points(cardinality: int, exponent: float, cells: int) -> np.ndarray:
    """Quantile points (cells + 1) of ranks 0..K-1 of a truncated continuous power law."""
    q = np.arange(cells + 1) / cells
    scale = (cardinality + 1.0) ** (1.0 - exponent) - 1.0
    ranks = np.floor(np.exp(np.log1p(scale * q) / (1.0 - exponent)) - 1.0)
    ranks[-1] = cardinality
    return np.clip(ranks, 0, cardinality).astype(np.int64)


# Wichura's AS241 rational approximations of the standard normal quantile (as in
# statistics.NormalDist.inv_cdf), coefficients from the highest power down.
_AS241 = {
    "central": ([2.5090809287301226727e+3, 3.3430575583588128105e+4, 6.7265770927008700853e+4,
                 4.5921953931549871457e+4, 1.3731693765509461125e+4, 1.9715909503065514427e+3,
                 1.3314166789178437745e+2, 3.3871328727963666080e+0],
                [5.2264952788528545610e+3, 2.8729085735721942674e+4, 3.9307895800092710610e+4,
                 2.1213794301586595867e+4, 5.3941960214247511077e+3, 6.8718700749205790830e+2,
                 4.2313330701600911252e+1, 1.0]),
    "middle": ([7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
                1.27045825245236838258e+0, 3.64784832476320460504e+0, 5.76949722146069140550e+0,
                4.63033784615654529590e+0, 1.42343711074968357734e+0],
               [1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
                1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e+0,
                2.05319162663775882187e+0, 1.0]),
    "tail": ([2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
              2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e+0,
              5.46378491116411436990e+0, 6.65790464350110377720e+0],
             [2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
              7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
              5.99832206555887937690e-1, 1.0]),
}


def _normal_quantiles(p: np.ndarray) -> np.ndarray:
    """Standard normal quantiles of probabilities in (0, 1), vectorised AS241."""
    p = np.asarray(p, np.float64)
    q = p - 0.5
    r_central = 0.180625 - q * q
    num, den = _AS241["central"]
    z = q * np.polyval(num, r_central) / np.polyval(den, r_central)
    r = np.sqrt(-np.log(np.where(q <= 0, p, 1.0 - p)))
    for name, shift, part in (("middle", 1.6, r <= 5.0), ("tail", 5.0, r > 5.0)):
        num, den = _AS241[name]
        x = np.polyval(num, r - shift) / np.polyval(den, r - shift)
        z = np.where((np.abs(q) > 0.425) & part, np.where(q < 0, -x, x), z)
    return z


def _lognormal_points(mu: float, sigma: float, cells: int) -> np.ndarray:
    """Quantile points (cells + 1) of floor(exp(N(mu, sigma))), capped below 10^8."""
    q = np.clip(np.arange(cells + 1) / cells, 1e-6, 1 - 1e-6)
    z = _normal_quantiles(q)
    return np.minimum(np.floor(np.exp(mu + sigma * z)), 99_999_999).astype(np.int64)


def _quantile_cells(constants: list[tuple[float, int]], points) -> np.ndarray:
    """Packed cells (start | step << 32, uint64 [QUANTILE_CELLS]) of a mixture.

    Args:
        constants: (share, value) of leading constant parts (missing values, ...), each
            rounded to whole cells.
        points: function of a cell count k -> the k + 1 quantile points of the continuous
            rest (non-negative, non-decreasing, below 2^32).
    """
    starts, steps = [], []
    for share, value in constants:
        k = int(round(share * QUANTILE_CELLS))
        starts.append(np.full(k, value, np.int64))
        steps.append(np.zeros(k, np.int64))
    rest = QUANTILE_CELLS - sum(len(s) for s in starts)
    bounds = points(rest)
    starts.append(bounds[:-1])
    steps.append(np.diff(bounds))
    start, step = np.concatenate(starts), np.concatenate(steps)
    assert start.min() >= 0 and (start + step).max() < 2**32
    return start.astype(np.uint64) | (step.astype(np.uint64) << np.uint64(32))


def _cell_max(cells: np.ndarray) -> int:
    """The largest value a packed cell table can give."""
    start, step = cells & _LOW32, cells >> np.uint64(32)
    return int((start + np.maximum(step, 1) - 1).max())


def _sample(cells: np.ndarray, base: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Values (uint64 [k, n]) from packed cells (flat, k tables) and random uint32 [k, n].

    The top QUANTILE_BITS bits of each random number pick the cell, the other
    _FRACTION_BITS the point in it. base: uint32 [k, 1], each column's first cell.
    """
    index = bits >> _CELL_SHIFT
    index += base
    packed = np.take(cells, index)
    np.bitwise_and(bits, _FRACTION_MASK, out=index)
    step = packed >> np.uint64(32)
    step *= index
    step >>= np.uint64(_FRACTION_BITS)
    packed &= _LOW32
    packed += step
    return packed


def _scramble32(ranks: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """A bijection of uint32 per column (distinct ranks give distinct hex strings)."""
    x = (ranks.astype(np.uint64) + salt.astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    for multiplier in (0x7FEB352D, 0x846CA68B):
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(multiplier)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x


def _criteo_int_table() -> np.ndarray:
    """uint64 [_DECIMAL_TABLE]: text + tab | bucket id << 48 of each drawn v + 4."""
    values = np.arange(_DECIMAL_TABLE) - _INT_SHIFT
    missing = values < -3
    words, lengths = _int_tokens(np.where(missing, 0, values))
    lengths = np.where(missing, 0, lengths)
    words = _with_separator(np.where(missing, np.uint64(0), words), lengths, _TAB)
    buckets = _int_bucket_ids(np.where(missing, 0, values))
    return words | (buckets.astype(np.uint64) << np.uint64(48))


def _int_bucket_ids(values: np.ndarray) -> np.ndarray:
    """Value ids of Criteo integers: the BARS bucket, shifted past the negative ones."""
    return np.clip(criteo.bucketize(values) + _INT_BUCKET_OFFSET, 0, _INT_BUCKETS - 1)


@dataclasses.dataclass
class _Block:
    """Rows drawn before labelling, field-major.

    Attributes:
        columns: int64 [F, n] global value ids (index into the parameter table).
        bits: uint32 [W, n] the rows' random numbers (row 0: the labels').
        words: uint64 [k, n] text words that are not looked up by id (Criteo integers).
        text: uint64 [t, n] text words of the categorical columns (set by `fast_logits`).
    """
    columns: np.ndarray
    bits: np.ndarray
    words: np.ndarray | None = None
    text: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        """int64 [n, F] global value ids."""
        return self.columns.T


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
        categorical = [i for i, f in enumerate(self.fields) if f.cardinality]
        salts = rng.integers(0, 2**32, len(categorical), dtype=np.uint64)
        # Quantile cells of every drawn column (Criteo: the integers, then the strings).
        tables = []
        if spec.raw_format == "criteo":
            for mu, sigma, missing, negative in _CRITEO_INTEGER:
                constants = [(missing, 0)] + [(negative / 3, v) for v in (1, 2, 3) if negative]
                tables.append(_quantile_cells(
                    constants, lambda k, mu=mu, sigma=sigma:
                    _lognormal_points(mu, sigma, k) + _INT_SHIFT))
        for i in categorical:
            f = self.fields[i]
            tables.append(_quantile_cells(  # value ids: 0 missing, rank + 1
                [(f.missing, 0)],
                lambda k, f=f: _zipf_points(f.cardinality, f.zipf_exponent, k) + 1))
        self._cells = np.concatenate(tables)
        self._cell_base = (np.arange(len(tables), dtype=np.uint32)
                           * np.uint32(QUANTILE_CELLS))[:, None]
        # The text word of every categorical value id (0 for missing values).
        self._text = np.zeros(total, np.uint64)
        for i, salt in zip(categorical, salts):
            f, first = self.fields[i], self.offsets[i] + 1
            self._text[first:first + f.cardinality] = self._value_text(i, salt)
        if spec.raw_format == "criteo":
            self._int_table = _criteo_int_table()
            num_int = len(_CRITEO_INTEGER)
            int_max = [_cell_max(t) - _INT_SHIFT for t in tables[:num_int]]
            # Integer columns that can go past the lookup table: their long values are
            # formatted apart.
            self._long_int_columns = [j for j, v in enumerate(int_max)
                                      if v + _INT_SHIFT >= _DECIMAL_TABLE]
            widths = [max(len(str(v)), 2 if neg else 1) + 1
                      for v, (_, _, _, neg) in zip(int_max, _CRITEO_INTEGER)]
            if max(widths) > 8:
                raise ValueError("a Criteo integer column exceeds 7 digits")
            self._int_offsets = 2 + np.concatenate([[0], np.cumsum(widths)[:-1]])
            self._hex_offset = 2 + sum(widths)
            self._row_width = self._hex_offset + 9 * len(_CRITEO_CATEGORICAL)
            self._randoms_per_row = 1 + len(tables)  # the label, the columns
        else:
            self._avazu_layout()
            # The label, the row id (two), the time (two), the columns.
            self._randoms_per_row = 5 + len(tables)
        self.scales = np.ones(3, np.float32)
        self.bias = np.float32(0.0)
        self._calibrate()

    def _value_text(self, field: int, salt) -> np.ndarray:
        """Text words of the values (ranks 0..K-1) of a categorical field."""
        f = self.fields[field]
        ranks = np.arange(f.cardinality)
        if self.spec.raw_format == "criteo":
            return _hex_words(_scramble32(ranks, salt))
        name, kind, _, first_value = _AVAZU_COLUMNS[field - 1]
        if kind == "hex":
            return _hex_words(_scramble32(ranks, salt))
        values = first_value + ranks
        if name == "C20":  # Avazu's C20 uses -1 for its most common value
            values = np.where(ranks == 0, -1, values)
        words, lengths = _int_tokens(values)
        last = field == len(_AVAZU_COLUMNS)
        return _with_separator(words, lengths, _NEWLINE if last else _COMMA)

    def _avazu_layout(self) -> None:
        # id (16 digits: two words) "," click "," hour (8 digits) "," then the columns.
        self._avazu_columns = []  # (kind, offset) of the 21 columns
        offset = 28
        for j, (_, kind, _, _) in enumerate(_AVAZU_COLUMNS):
            self._avazu_columns.append((kind, offset))
            if kind == "hex":
                offset += 9
            else:
                field = j + 1
                first = self.offsets[field] + 1
                words = self._text[first:first + self.fields[field].cardinality]
                offset += max(1, (int(np.max(words)).bit_length() + 7) // 8)
        self._avazu_end = offset
        self._row_width = max(offset, max(o for _, o in self._avazu_columns) + 8)

    # -- drawing rows --------------------------------------------------------------

    def draw(self, rng: np.random.Generator, n: int) -> _Block:
        """Value ids (and what the text needs) of n fresh rows."""
        words = (self._randoms_per_row + 1) // 2
        bits = rng.bit_generator.random_raw(n * words).view(np.uint32).reshape(-1, n)
        if self.spec.raw_format == "criteo":
            return self._draw_criteo(bits)
        return self._draw_avazu(bits)

    def _draw_criteo(self, bits: np.ndarray) -> _Block:
        num_int = len(_CRITEO_INTEGER)
        values = _sample(self._cells, self._cell_base, bits[1:]).view(np.int64)
        ints = values[:num_int]
        packed = self._int_table.take(ints, mode="clip")
        columns = values  # reused: the categorical value ids stay in place
        ints_long = [(j, np.flatnonzero(ints[j] >= _DECIMAL_TABLE))
                     for j in self._long_int_columns]
        ints_long = [(j, rows, ints[j, rows] - _INT_SHIFT) for j, rows in ints_long if len(rows)]
        np.right_shift(packed, np.uint64(48), out=columns[:num_int], casting="unsafe")
        packed &= _LOW48
        for j, rows, long_values in ints_long:
            words, lengths = _int_tokens(long_values)
            packed[j, rows] = _with_separator(words, lengths, _TAB)
            columns[j, rows] = _int_bucket_ids(long_values)
        columns += self.offsets[:, None]
        return _Block(columns, bits, packed)

    def _draw_avazu(self, bits: np.ndarray) -> _Block:
        n = bits.shape[1]
        day = (bits[3].astype(np.uint64) * np.uint64(_AVAZU_DAYS)) >> np.uint64(32)
        hour = (bits[4].astype(np.uint64) * np.uint64(24)) >> np.uint64(32)
        weekday = self._avazu_weekdays()[day.astype(np.int64)]
        columns = np.empty((len(self.fields), n), np.int64)
        columns[0] = hour
        columns[1:-2] = _sample(self._cells, self._cell_base, bits[5:5 + len(columns) - 3]
                                ).view(np.int64)
        columns[-2] = weekday
        columns[-1] = (weekday == 0) | (weekday == 6)
        columns += self.offsets[:, None]
        return _Block(columns, bits)

    @staticmethod
    def _avazu_days() -> list:
        return [_AVAZU_FIRST_DAY + datetime.timedelta(days=d) for d in range(_AVAZU_DAYS)]

    def _avazu_weekdays(self) -> np.ndarray:
        return np.array([int(d.strftime("%w")) for d in self._avazu_days()])

    def _text_rows(self, block: _Block, labels: np.ndarray) -> np.ndarray:
        """The rows' raw text (uint8) from their ids, text words and labels."""
        n = len(labels)
        rows = _row_matrix(n, self._row_width)
        if self.spec.raw_format == "criteo":
            num_int = len(_CRITEO_INTEGER)
            # Inline words left to right: "0\t" / "1\t", then the integers with their tabs.
            _store_words(rows, 0, labels.astype(np.uint64) + np.uint64(ord("0") | _TAB << 8))
            for j in range(num_int):
                _store_words(rows, int(self._int_offsets[j]), block.words[j])
            hex_words = block.text
            num_cat = len(hex_words)
            for j in range(num_cat):  # (one store of hex_words.T would be slower)
                _store_words(rows, self._hex_offset + 9 * j, hex_words[j])
            separators = np.full(num_cat, _TAB, np.uint8)
            separators[-1] = _NEWLINE
            _store_bytes(rows, self._hex_offset + 8, separators, count=num_cat)
            return _strip(rows)
        # Avazu: inline words left to right (click, integer columns), then 8-byte words
        # (id, hour, hex columns) and their separator bytes.
        _store_words(rows, 17, labels.astype(np.uint64) + np.uint64(ord("0") | _COMMA << 8))
        text = block.text
        hex_columns = []
        for j, (kind, offset) in enumerate(self._avazu_columns):
            if kind == "hex":
                hex_columns.append((j, offset))
            else:
                _store_words(rows, offset, text[j])
        rows[:, self._avazu_end:] = 0
        row_bits = (block.bits[1].astype(np.uint64) << np.uint64(32)) | block.bits[2]
        row_ids = (row_bits % np.uint64(9 * 10**15)).astype(np.int64) + 10**15
        _store_words(rows, 0, np.stack([_padded8_words(row_ids // 10**8),
                                        _padded8_words(row_ids % 10**8)], axis=1), stride=8)
        days = self._avazu_days()
        date_code = np.array([(d.year % 100) * 10**6 + d.month * 10**4 + d.day * 100
                              for d in days])
        day = ((block.bits[3].astype(np.uint64) * np.uint64(_AVAZU_DAYS)) >> np.uint64(32)
               ).astype(np.int64)
        hour = block.columns[0] - self.offsets[0]
        _store_words(rows, 19, _padded8_words(date_code[day] + hour))
        for j, offset in hex_columns:
            _store_words(rows, offset, text[j])
            _store_bytes(rows, offset + 8, _COMMA)
        _store_bytes(rows, 16, _COMMA)
        _store_bytes(rows, 27, _COMMA)
        return _strip(rows)

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
        # The bias for the target positive rate: Newton steps on the (increasing) mean
        # probability, kept inside a bisection bracket.
        low, high, bias = -20.0, 20.0, 0.0
        for _ in range(60):
            probs = _sigmoid(logits + bias).astype(np.float64)
            error = probs.mean() - self.spec.positive_rate
            if error < 0:
                low = bias
            else:
                high = bias
            if abs(error) < 1e-9 or high - low < 1e-9:
                break
            bias -= error / max((probs * (1.0 - probs)).mean(), 1e-12)
            if not low < bias < high:
                bias = 0.5 * (low + high)
        self.bias = np.float32(bias)
        # The same function, regrouped for speed: the linear part and the FM part's
        # squared norms are one scalar per value id, the latents 16-byte items, and the
        # MLP's first layer is a sum of per-(field, value) projections (no BLAS call,
        # whose threads would fight the generator's).
        unary = self.scales[0] * self.weights
        for f in self.fm_fields:
            start, stop = self.offsets[f], self.offsets[f] + self.fields[f].num_ids
            unary[start:stop] -= 0.5 * self.scales[1] * np.einsum(
                "nk,nk->n", self.latents[start:stop], self.latents[start:stop])
        self._unary = unary.astype(np.float32)
        self._text_fields = np.array([i for i, f in enumerate(self.fields) if f.cardinality])
        self._latent_items = np.ascontiguousarray(self.latents).view(np.complex128).reshape(-1)
        self._fm_scale = np.float32(0.5 * self.scales[1])
        projections, shifts, base = [], [], 0
        for j, f in enumerate(self.deep_fields):
            start, stop = self.offsets[f], self.offsets[f] + self.fields[f].num_ids
            w = self.hidden_w[j * LATENT_DIM:(j + 1) * LATENT_DIM]
            projections.append(np.einsum("nk,kh->nh", self.latents[start:stop], w))
            shifts.append(base - start)
            base += stop - start
        self._deep_projection = np.concatenate(projections).astype(np.float32)
        self._deep_shift = np.array(shifts, np.int64)[:, None]
        self._out_w = (self.scales[2] * self.out_w).astype(np.float32)

    def fast_logits(self, block: _Block) -> np.ndarray:
        """`logits` of a block's rows, regrouped for speed (equal up to float32 rounding).

        Also sets `block.text`, the categorical columns' text words.
        """
        columns = block.columns
        block.text = self._text.take(columns[self._text_fields])
        logits = self._unary.take(columns).sum(axis=0)
        fm = self._latent_items.take(columns[self.fm_fields]).view(np.float32).reshape(
            FM_FIELDS, -1, LATENT_DIM).sum(axis=0)
        logits += self._fm_scale * np.einsum("nk,nk->n", fm, fm)
        hidden = self._deep_projection.take(columns[self.deep_fields] + self._deep_shift,
                                            axis=0).sum(axis=0)
        hidden += self.hidden_b
        np.maximum(hidden, 0, out=hidden)
        logits += np.einsum("nh,h->n", hidden, self._out_w)
        logits += self.bias
        return logits

    def chunk(self, index: int, num_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Generates chunk `index` (rows index*CHUNK_ROWS ...): (text, probs, positives).

        The text is uint8 (bytes-like), the probabilities float32.
        """
        rng = np.random.default_rng([self.spec.seed, 2, index])
        block = self.draw(rng, num_rows)
        probs = _sigmoid(self.fast_logits(block))
        # 24 random bits per label: uniform on [0, 1) in steps of 2^-24.
        uniform = (block.bits[0] >> np.uint32(8)).astype(np.float32)
        uniform *= np.float32(2.0**-24)
        labels = uniform < probs
        return self._text_rows(block, labels), probs, int(np.count_nonzero(labels))


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
    xla_cpu.keep_freed_blocks()
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
