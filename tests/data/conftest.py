"""Shared fixtures of the data pipeline tests: the real rows and tiny generated files."""

import functools
import math
import os

import numpy as np
import pytest

from mlctr.data import parsing, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def shared_files(dataset: str, suffix: str) -> list[str]:
    """The real raw files of `dataset` in <repo>/../shared/data, skipping when absent."""
    directory = os.path.join(SHARED_DATA, dataset)
    if not os.path.isdir(directory):
        pytest.skip(f"real {dataset} rows not found at {directory} (<repo>/../shared/data); "
                    "these tests need the shared data directory")
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(suffix))
    if not files:
        pytest.skip(f"no *{suffix} files in {directory}")
    return files


@pytest.fixture(scope="package")
def criteo_files():
    return shared_files("criteo", ".txt")


@pytest.fixture(scope="package")
def avazu_files():
    return shared_files("avazu", ".csv")


@pytest.fixture(scope="package")
def synthetic_criteo(tmp_path_factory):
    """A 3000-row synthetic Criteo-format raw file (with true probabilities)."""
    path = str(tmp_path_factory.mktemp("synthetic") / "criteo.txt")
    synthetic.generate(path, num_rows=3000, seed=7, raw_format="criteo")
    return path


@pytest.fixture(scope="package")
def synthetic_avazu(tmp_path_factory):
    """A 3000-row synthetic Avazu-format raw file (with true probabilities)."""
    path = str(tmp_path_factory.mktemp("synthetic") / "avazu.csv")
    synthetic.generate(path, num_rows=3000, seed=7, raw_format="avazu")
    return path


@functools.lru_cache(maxsize=None)
def criteo_reference_rows(path):
    """(keys, labels) the slow, obvious way: BARS bucketing, strings as keys."""
    keys, labels = [], []
    with open(path, "rb") as f:
        for line in f:
            columns = line.rstrip(b"\r\n").split(b"\t")
            assert len(columns) == 40
            labels.append(int(columns[0]))
            ints = [int(c) if c else 0 for c in columns[1:14]]
            row = [int(math.floor(np.log(x) ** 2)) if x > 2 else int(x) for x in ints]
            row += [parsing.string_key(c) for c in columns[14:]]
            keys.append(row)
    return np.array(keys, np.int64).reshape(-1, 39), np.array(labels, np.uint8)


@pytest.fixture(scope="package")
def criteo_reference():
    """criteo_reference_rows: the plain-Python reference parser of Criteo files."""
    return criteo_reference_rows
