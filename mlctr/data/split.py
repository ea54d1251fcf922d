"""The seeded 8:1:1 train/valid/test split, assigned row by row while streaming.

Rows (the good rows of the raw file, in file order) are grouped in consecutive blocks
of 10. In each block a seeded hash of the row index ranks the 10 positions: the
lowest-ranked row goes to test, the next to valid, the other 8 to train. So every
complete block contributes exactly 8:1:1, the split needs neither the row count in
advance nor the file in memory, and it depends only on (seed, row index): the same
file and seed always give the same split, whatever the chunk size.

BARS Criteo_x4/Avazu_x4 used sklearn's StratifiedKFold(10, shuffle, seed 2018) on the
whole file (fold 0 test, fold 1 valid); that cannot be reproduced without sklearn and
the whole file in memory, so the rows differ from BARS's while the protocol (random
8:1:1, fixed seed) is the same. See the README.
"""

from __future__ import annotations

import numpy as np

from mlctr.data.vocab import mix64

TRAIN, VALID, TEST = 0, 1, 2
BLOCK = 10


def assign_splits(first_row: int, num_rows: int, seed: int) -> np.ndarray:
    """Split of rows first_row .. first_row + num_rows - 1.

    Args:
        first_row: 0-based index of the first row among the file's good rows.
        num_rows: number of rows.
        seed: split seed (BARS uses 2018).

    Returns:
        int8 [num_rows]: TRAIN (0), VALID (1) or TEST (2).
    """
    if num_rows == 0:
        return np.zeros(0, np.int8)
    first_block = first_row // BLOCK
    last_block = (first_row + num_rows - 1) // BLOCK
    positions = np.arange(first_block * BLOCK, (last_block + 1) * BLOCK, dtype=np.uint64)
    salt = mix64(np.array([seed], np.int64))[0]
    ranks = np.argsort(np.argsort(mix64(positions ^ salt).reshape(-1, BLOCK), axis=1), axis=1)
    split = np.where(ranks == 0, TEST, np.where(ranks == 1, VALID, TRAIN)).astype(np.int8)
    offset = first_row - first_block * BLOCK
    return split.reshape(-1)[offset:offset + num_rows]
