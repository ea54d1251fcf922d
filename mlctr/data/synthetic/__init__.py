"""Ground-truth synthetic CTR data in the raw Criteo (or Avazu) format.

`generate` writes a raw file that `prepare` reads exactly like the Kaggle file, plus
each row's true click probability (`<raw>.true_prob.npy`) and a description
(`<raw>.json`), so every model can be judged against the Bayes-optimal AUC and logloss.
The generator has three parts, one module each:

* mlctr/data/synthetic/marginals.py: the fields, their cardinalities and value
  distributions (Zipf-like categoricals, log-normal counts, Criteo's missing shares);
* mlctr/data/synthetic/hidden.py (and synthetic_parts.py): the hidden click function
  of the value ids, with the `diversity` knob that adds architecture-specific parts;
* mlctr/data/synthetic/text.py: the raw text writer (Criteo tab-separated, Avazu csv).

Everything is deterministic in (format, rows, seed, signal, diversity): rows are
generated in chunks of CHUNK_ROWS from per-chunk random streams (so also independent
of the number of threads), vectorised and field-major (one array row per column). See
docs/synthetic.md for the user's view.
"""

from __future__ import annotations

import collections
import contextlib
import concurrent.futures
import dataclasses
import gzip
import json
import os

import numpy as np

from mlctr import atomic
from mlctr import xla_cpu
from mlctr.data import avazu
from mlctr.data.synthetic import hidden as hidden_lib
from mlctr.data.synthetic import marginals
from mlctr.data.synthetic import text as text_lib
from mlctr.data.synthetic.hidden import HiddenFunction, LATENT_DIM, HIDDEN_UNITS  # noqa: F401

GENERATOR_VERSION = 2
CHUNK_ROWS = 1 << 13
CALIBRATION_ROWS = 1 << 15
# Standard deviations of the three shared logit parts (mlctr/data/synthetic/hidden.py).
# With these, on 500k Criteo-format rows (x4_001): Bayes AUC 0.819 (valid), logistic
# regression 0.762, DeepFM (16-dim embeddings, DNN 200x3, batch 1024, 2 epochs) 0.788:
# models differ, and there is headroom below Bayes.
SIGNAL = {"linear": 0.8, "fm": 0.9, "deep": 0.8}
POSITIVE_RATE = 0.25


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """What determines a synthetic file.

    Attributes:
        raw_format: "criteo" or "avazu".
        num_rows: rows to generate.
        seed: random seed.
        signal_linear, signal_fm, signal_deep: standard deviations of the shared parts.
        positive_rate: target mean click probability.
        diversity: variance of the architecture-specific parts over that of the shared
            ones (>= 0; 0: the shared function alone).
    """

    raw_format: str
    num_rows: int
    seed: int
    signal_linear: float = SIGNAL["linear"]
    signal_fm: float = SIGNAL["fm"]
    signal_deep: float = SIGNAL["deep"]
    positive_rate: float = POSITIVE_RATE
    diversity: float = 0.0

    def __post_init__(self):
        if not self.diversity >= 0:
            raise ValueError(f"synthetic diversity must be >= 0, got {self.diversity}")

    def to_json(self) -> dict:
        """The spec as saved in the description (with the generator version).

        diversity 0 is left out, so files generated without the knob keep their spec.
        """
        spec = dataclasses.asdict(self)
        if not self.diversity:
            del spec["diversity"]
        return {"generator_version": GENERATOR_VERSION, **spec}

    def signal(self) -> dict[str, float]:
        """Standard deviations of the shared parts, by name."""
        return {"linear": self.signal_linear, "fm": self.signal_fm, "deep": self.signal_deep}


def spec_path(raw_path: str) -> str:
    """The JSON description written next to a generated raw file."""
    return raw_path + ".json"


def true_prob_path(raw_path: str) -> str:
    """The float32 [rows] true click probabilities written next to a raw file."""
    return raw_path + ".true_prob.npy"


class Generator:
    """Draws rows, their true click probabilities, labels and raw text.

    Args:
        spec: what to generate.

    Attributes:
        rows: the marginals (fields, offsets, value draws).
        hidden: the hidden click function.
        text: the raw text writer.
    """

    def __init__(self, spec: SyntheticSpec):
        rng = np.random.default_rng([spec.seed, 0])
        self.spec = spec
        # The draws from `rng` are in a fixed order: the fields' exponents, the click
        # function's parameters, the text's salts.
        fields = marginals.make_fields(spec.raw_format, spec.num_rows, rng)
        self.rows = marginals.Marginals(spec.raw_format, fields)
        self.hidden = HiddenFunction(fields, self.rows.offsets, rng, spec.diversity,
                                     np.random.default_rng([spec.seed, 3]))
        num_text = sum(1 for f in fields if f.cardinality)
        salts = rng.integers(0, 2**32, num_text, dtype=np.uint64)
        self.text = text_lib.RawText(self.rows, salts)
        calibration = self.draw(np.random.default_rng([spec.seed, 1]), CALIBRATION_ROWS)
        self.hidden.calibrate(calibration.ids,
                              hidden_lib.target_stds(spec.signal(), spec.diversity),
                              spec.positive_rate)

    @property
    def fields(self) -> list[marginals.Field]:
        return self.rows.fields

    @property
    def offsets(self) -> np.ndarray:
        return self.rows.offsets

    def draw(self, rng: np.random.Generator, n: int) -> marginals.Block:
        """Value ids (and what the text needs) of n fresh rows."""
        return self.rows.draw(rng, n)

    def chunk(self, index: int, num_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Generates chunk `index` (rows index*CHUNK_ROWS ...): (text, probs, positives).

        The text is uint8 (bytes-like), the probabilities float32.
        """
        rng = np.random.default_rng([self.spec.seed, 2, index])
        block = self.draw(rng, num_rows)
        self.text.set_text(block)
        probs = hidden_lib.sigmoid(self.hidden.fast_logits(block.columns))
        # 24 random bits per label: uniform on [0, 1) in steps of 2^-24.
        uniform = (block.bits[0] >> np.uint32(8)).astype(np.float32)
        uniform *= np.float32(2.0**-24)
        labels = uniform < probs
        return self.text.rows(block, labels), probs, int(np.count_nonzero(labels))

    def description(self, positives: int, mean_prob: float) -> dict:
        """What `generate` saves next to the file."""
        hidden = self.hidden
        described = {"latent_dim": LATENT_DIM, "hidden_units": HIDDEN_UNITS,
                     "scales": [float(s) for s in hidden.scales[:3]],
                     "bias": float(hidden.bias),
                     "cardinalities": {f.name: f.cardinality for f in self.fields
                                       if f.cardinality}}
        if hidden.specific is not None:  # (diversity 0 keeps the description it had)
            described["diversity"] = hidden.diversity
            described["parts"] = {
                name: {"scale": float(scale),
                       "fields": [self.fields[f].name for f in hidden.specific.fields[name]]}
                for name, scale in zip(hidden.part_names[3:], hidden.scales[3:])}
        return {"spec": self.spec.to_json(), "positive_rate": positives / self.spec.num_rows,
                "mean_true_prob": mean_prob, "hidden_function": described}


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
            signal_deep, positive_rate, diversity).

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
    generator = Generator(spec)
    # Fresh random names (mlctr.atomic): a link planted at a fixed `<path>.tmp` would
    # have redirected the rows into any file.
    tmp_path = atomic.fresh_name(path, ".gz.tmp" if path.endswith(".gz") else ".tmp")
    tmp_prob = atomic.fresh_name(true_prob_path(path), ".tmp.npy")
    try:
        probs = np.lib.format.open_memmap(tmp_prob, mode="w+", dtype=np.float32,
                                          shape=(num_rows,))
        positives = _write_chunks(generator, tmp_path, probs, num_threads)
        probs.flush()
        mean_prob = float(np.mean(probs, dtype=np.float64))
        del probs
        os.replace(tmp_prob, true_prob_path(path))
        os.replace(tmp_path, path)
    except BaseException:
        for leftover in (tmp_path, tmp_prob):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        raise
    description = generator.description(positives, mean_prob)
    with atomic.replacing(spec_path(path)) as f:
        json.dump(description, f, indent=2)
        f.write("\n")
    return description


def _write_chunks(generator: Generator, path: str, probs: np.ndarray, num_threads: int) -> int:
    """Writes every chunk's text to `path` and its probabilities to `probs`; the positives."""
    num_rows = len(probs)
    positives = 0
    if path.endswith(".gz.tmp"):
        handle = gzip.open(path, "wb", compresslevel=4)
    else:
        handle = open(path, "wb")
    starts = range(0, num_rows, CHUNK_ROWS)
    with handle, concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        if generator.spec.raw_format == "avazu":
            handle.write(avazu.HEADER + b"\n")
        pending = collections.deque()
        for index, start in enumerate(starts):
            pending.append((start, pool.submit(generator.chunk, index,
                                               min(CHUNK_ROWS, num_rows - start))))
            while pending and (len(pending) > 2 * num_threads or index == len(starts) - 1):
                chunk_start, future = pending.popleft()
                text, chunk_probs, chunk_positives = future.result()
                probs[chunk_start:chunk_start + len(chunk_probs)] = chunk_probs
                positives += chunk_positives
                handle.write(text)
    return positives


def read_spec(path: str) -> dict | None:
    """The description of a generated file, or None when there is none."""
    try:
        with open(spec_path(path), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
