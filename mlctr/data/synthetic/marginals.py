"""The marginals of the synthetic generator: fields, cardinalities and value draws.

Per field, scaled down for small files:
* categorical values follow a truncated power law (Zipf-like, exponent 1.05 to 1.6 per
  field) over a per-field cardinality from 3 to 10^6 at full size (45.8M rows; the
  Criteo cardinalities, capped at 10^6), scaled by sqrt(rows / 45.8M); some fields are
  often missing, with Criteo's missing shares;
* integers are log-normal counts (heavy-tailed, up to 10^8), some missing, and I2 has a
  few negative values, as in Criteo;
* Avazu: the Kaggle columns with their cardinalities, the hour over 10 days of October
  2014, weekday and weekend derived from it.

Every random column value is drawn from one 32-bit random number through a quantile
table of QUANTILE_CELLS cells of equal probability: the top bits pick a cell, the low
bits a point inside it, interpolated linearly between the cell's bounds. That is the
inverse CDF of the column's distribution, exact at the cell bounds, at the cost of a few
integer operations per value instead of logarithms. Missing values (and Criteo's few
negative integers) are leading runs of constant cells of the same tables, so one draw
gives the value, missing or not.
"""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np

from mlctr.data import criteo
from mlctr.data.synthetic import text

FULL_ROWS = 45_840_617  # rows of the Criteo Kaggle train.txt
MAX_CARDINALITY = 1_000_000

# Criteo: (cardinality of the full file, share missing) of C1..C26.
CRITEO_CATEGORICAL = [
    (1460, 0.0), (583, 0.0), (10131227, 0.03), (2202608, 0.03), (305, 0.0), (24, 0.12),
    (12517, 0.0), (633, 0.0), (3, 0.0), (93145, 0.0), (5683, 0.0), (8351593, 0.03),
    (3194, 0.0), (27, 0.0), (14992, 0.0), (5461306, 0.03), (10, 0.0), (5652, 0.0),
    (2173, 0.44), (4, 0.44), (7046547, 0.03), (18, 0.76), (15, 0.0), (286181, 0.03),
    (105, 0.44), (142572, 0.44)]
# Criteo: (log-normal mu, sigma, share missing, share negative) of I1..I13.
CRITEO_INTEGER = [
    (0.6, 1.2, 0.45, 0.0), (1.5, 1.8, 0.0, 0.05), (2.0, 1.4, 0.21, 0.0), (1.6, 1.0, 0.22, 0.0),
    (7.5, 1.8, 0.03, 0.0), (3.2, 1.8, 0.22, 0.0), (1.4, 1.6, 0.04, 0.0), (2.2, 1.1, 0.0005, 0.0),
    (3.6, 1.5, 0.04, 0.0), (0.5, 0.6, 0.45, 0.0), (1.1, 0.9, 0.04, 0.0), (0.2, 1.0, 0.77, 0.0),
    (1.6, 1.0, 0.22, 0.0)]
# Avazu: (column, kind, cardinality of the full 40.4M-row file, first integer value).
AVAZU_COLUMNS = [
    ("C1", "int", 7, 1001), ("banner_pos", "int", 7, 0), ("site_id", "hex", 4737, 0),
    ("site_domain", "hex", 7745, 0), ("site_category", "hex", 26, 0),
    ("app_id", "hex", 8552, 0), ("app_domain", "hex", 559, 0),
    ("app_category", "hex", 36, 0), ("device_id", "hex", 2686408, 0),
    ("device_ip", "hex", 6729486, 0), ("device_model", "hex", 8251, 0),
    ("device_type", "int", 5, 0), ("device_conn_type", "int", 4, 0),
    ("C14", "int", 2626, 375), ("C15", "int", 8, 120), ("C16", "int", 9, 20),
    ("C17", "int", 435, 112), ("C18", "int", 4, 0), ("C19", "int", 68, 33),
    ("C20", "int", 172, 100000), ("C21", "int", 60, 1)]
AVAZU_FULL_ROWS = 40_428_967
AVAZU_FIRST_DAY = datetime.date(2014, 10, 21)
AVAZU_DAYS = 10
_INT_BUCKET_OFFSET = 4  # bucket ids start at -3 (negative integers)
INT_BUCKETS = _INT_BUCKET_OFFSET + 400

QUANTILE_BITS = 12
QUANTILE_CELLS = 1 << QUANTILE_BITS
_FRACTION_BITS = 20
_CELL_SHIFT = np.uint32(32 - QUANTILE_BITS)
_FRACTION_MASK = np.uint32((1 << _FRACTION_BITS) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)
_LOW48 = np.uint64((1 << 48) - 1)
# Criteo integers are drawn as v + 4 (v >= -3; 0: missing); below DECIMAL_TABLE their
# text (with the tab) and bucket id come from one table lookup.
INT_SHIFT = 4
DECIMAL_TABLE = 100_000 + INT_SHIFT


@dataclasses.dataclass
class Field:
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


def make_fields(raw_format: str, num_rows: int, rng: np.random.Generator) -> list[Field]:
    """The model-visible fields of a format (draws the Zipf exponents from `rng`)."""
    fields = []
    if raw_format == "criteo":
        for name in criteo.INT_COLUMNS:
            fields.append(Field(name, INT_BUCKETS))
        exponents = rng.uniform(1.05, 1.6, len(CRITEO_CATEGORICAL))
        for name, (full, missing), s in zip(criteo.STR_COLUMNS, CRITEO_CATEGORICAL, exponents):
            k = _scaled_cardinality(full, num_rows, FULL_ROWS)
            fields.append(Field(name, k + 1, float(s), k, missing, full))
    elif raw_format == "avazu":
        fields.append(Field("hour", 24))
        exponents = rng.uniform(1.05, 1.6, len(AVAZU_COLUMNS))
        for (name, _, full, _), s in zip(AVAZU_COLUMNS, exponents):
            k = _scaled_cardinality(full, num_rows, AVAZU_FULL_ROWS)
            fields.append(Field(name, k + 1, float(s), k, 0.0, full))
        fields.append(Field("weekday", 7))
        fields.append(Field("weekend", 2))
    else:
        raise ValueError(f"unknown synthetic raw_format {raw_format!r}")
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


def normal_quantiles(p: np.ndarray) -> np.ndarray:
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
    z = normal_quantiles(q)
    return np.minimum(np.floor(np.exp(mu + sigma * z)), 99_999_999).astype(np.int64)


def quantile_cells(constants: list[tuple[float, int]], points) -> np.ndarray:
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


def cell_max(cells: np.ndarray) -> int:
    """The largest value a packed cell table can give."""
    start, step = cells & _LOW32, cells >> np.uint64(32)
    return int((start + np.maximum(step, 1) - 1).max())


def sample(cells: np.ndarray, base: np.ndarray, bits: np.ndarray) -> np.ndarray:
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


def int_bucket_ids(values: np.ndarray) -> np.ndarray:
    """Value ids of Criteo integers: the BARS bucket, shifted past the negative ones."""
    return np.clip(criteo.bucketize(values) + _INT_BUCKET_OFFSET, 0, INT_BUCKETS - 1)


def _criteo_int_table() -> np.ndarray:
    """uint64 [DECIMAL_TABLE]: text + tab | bucket id << 48 of each drawn v + 4."""
    values = np.arange(DECIMAL_TABLE) - INT_SHIFT
    missing = values < -3
    words, lengths = text.int_tokens(np.where(missing, 0, values))
    lengths = np.where(missing, 0, lengths)
    words = text.with_separator(np.where(missing, np.uint64(0), words), lengths, text.TAB)
    buckets = int_bucket_ids(np.where(missing, 0, values))
    return words | (buckets.astype(np.uint64) << np.uint64(48))


@dataclasses.dataclass
class Block:
    """Rows drawn before labelling, field-major.

    Attributes:
        columns: int64 [F, n] global value ids (index into the parameter table).
        bits: uint32 [W, n] the rows' random numbers (row 0: the labels').
        words: uint64 [k, n] text words that are not looked up by id (Criteo integers).
        text: uint64 [t, n] text words of the categorical columns (set by the writer).
        day: int64 [n] Avazu: the day index (0..AVAZU_DAYS-1) of each row.
    """
    columns: np.ndarray
    bits: np.ndarray
    words: np.ndarray | None = None
    text: np.ndarray | None = None
    day: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        """int64 [n, F] global value ids."""
        return self.columns.T


class Marginals:
    """The fields of a format and the draw of their values (ids and integer text).

    Args:
        raw_format: "criteo" or "avazu".
        fields: from `make_fields`.
    """

    def __init__(self, raw_format: str, fields: list[Field]):
        self.raw_format = raw_format
        self.fields = fields
        sizes = np.array([f.num_ids for f in fields])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.num_ids = int(sizes.sum())
        self.columns = AVAZU_COLUMNS if raw_format == "avazu" else None
        self.dates = [AVAZU_FIRST_DAY + datetime.timedelta(days=d) for d in range(AVAZU_DAYS)]
        self._weekdays = np.array([int(d.strftime("%w")) for d in self.dates])
        tables = self._tables()
        self._cells = np.concatenate(tables)
        self._cell_base = (np.arange(len(tables), dtype=np.uint32)
                           * np.uint32(QUANTILE_CELLS))[:, None]
        if raw_format == "criteo":
            self._int_table = _criteo_int_table()
            self.int_negative = [bool(negative) for _, _, _, negative in CRITEO_INTEGER]
            self.int_max = [cell_max(t) - INT_SHIFT for t in tables[:len(CRITEO_INTEGER)]]
            # Integer columns that can go past the lookup table: their long values are
            # formatted apart.
            self._long_int_columns = [j for j, v in enumerate(self.int_max)
                                      if v + INT_SHIFT >= DECIMAL_TABLE]
            self._randoms_per_row = 1 + len(tables)  # the label, the columns
        else:
            # The label, the row id (two), the time (two), the columns.
            self._randoms_per_row = 5 + len(tables)

    def _tables(self) -> list[np.ndarray]:
        """Quantile cells of every drawn column (Criteo: the integers, then the strings)."""
        tables = []
        if self.raw_format == "criteo":
            for mu, sigma, missing, negative in CRITEO_INTEGER:
                constants = [(missing, 0)] + [(negative / 3, v) for v in (1, 2, 3) if negative]
                tables.append(quantile_cells(
                    constants, lambda k, mu=mu, sigma=sigma:
                    _lognormal_points(mu, sigma, k) + INT_SHIFT))
        for f in self.fields:
            if f.cardinality:
                tables.append(quantile_cells(  # value ids: 0 missing, rank + 1
                    [(f.missing, 0)],
                    lambda k, f=f: _zipf_points(f.cardinality, f.zipf_exponent, k) + 1))
        return tables

    def draw(self, rng: np.random.Generator, n: int) -> Block:
        """Value ids (and what the text needs) of n fresh rows."""
        words = (self._randoms_per_row + 1) // 2
        bits = rng.bit_generator.random_raw(n * words).view(np.uint32).reshape(-1, n)
        if self.raw_format == "criteo":
            return self._draw_criteo(bits)
        return self._draw_avazu(bits)

    def _draw_criteo(self, bits: np.ndarray) -> Block:
        num_int = len(CRITEO_INTEGER)
        values = sample(self._cells, self._cell_base, bits[1:]).view(np.int64)
        ints = values[:num_int]
        packed = self._int_table.take(ints, mode="clip")
        columns = values  # reused: the categorical value ids stay in place
        ints_long = [(j, np.flatnonzero(ints[j] >= DECIMAL_TABLE))
                     for j in self._long_int_columns]
        ints_long = [(j, rows, ints[j, rows] - INT_SHIFT) for j, rows in ints_long if len(rows)]
        np.right_shift(packed, np.uint64(48), out=columns[:num_int], casting="unsafe")
        packed &= _LOW48
        for j, rows, long_values in ints_long:
            words, lengths = text.int_tokens(long_values)
            packed[j, rows] = text.with_separator(words, lengths, text.TAB)
            columns[j, rows] = int_bucket_ids(long_values)
        columns += self.offsets[:, None]
        return Block(columns, bits, packed)

    def _draw_avazu(self, bits: np.ndarray) -> Block:
        n = bits.shape[1]
        day = ((bits[3].astype(np.uint64) * np.uint64(AVAZU_DAYS)) >> np.uint64(32)
               ).astype(np.int64)
        hour = (bits[4].astype(np.uint64) * np.uint64(24)) >> np.uint64(32)
        weekday = self._weekdays[day]
        columns = np.empty((len(self.fields), n), np.int64)
        columns[0] = hour
        columns[1:-2] = sample(self._cells, self._cell_base, bits[5:5 + len(columns) - 3]
                               ).view(np.int64)
        columns[-2] = weekday
        columns[-1] = (weekday == 0) | (weekday == 6)
        columns += self.offsets[:, None]
        return Block(columns, bits, day=day)
