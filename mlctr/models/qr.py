"""Quotient-remainder embeddings (Shi et al. 2020): a field's V ids in two small tables.

"Compositional Embeddings Using Complementary Partitions for Memory-Efficient
Recommendation Systems" (Shi, Mudigere, Naumov, Yang; KDD 2020) gives local id i of a
field the pair (i // m, i mod m) and two tables, ceil(V / m) quotient rows and m
remainder rows, whose two embeddings are combined (element-wise product or sum). Every
id keeps its own pair, so unlike a hash into ceil(V / m) + m buckets no two ids share
an embedding, at (V / m + m) rows instead of V (m ~ sqrt(V) is the smallest).

mlctr's models, its sparse optimizers and its table sharding all work on one
concatenated table indexed by global ids [B, F]. So the pairs are rows of one
concatenated table too: `QRLayout.rows` maps a batch's dataset ids [B, F] to table rows
[B, 2F] (the quotient and remainder row of each field, side by side), the lookup of
those rows is the usual one (and so are the sparse update and the sharding by rows),
and `combine` turns the [B, 2F, D] embeddings into the [B, F, D] field embeddings.
The dataset is unchanged: m is chosen per run (`config.vocab.qr_collisions`), not per
prepare. A field of at most m ids gains nothing from the split and keeps one table (its
remainder rows, combined with one shared quotient row).

`QRLayout.rows` (numpy, for the host) and `QRLayout.jnp_rows` (inside the jitted step
and predict function, mlctr/mutual.py) compute the same rows; the tests check that.
"""

from __future__ import annotations

import dataclasses

import numpy as np

COMBINERS = ("product", "sum")


@dataclasses.dataclass(frozen=True)
class QRLayout:
    """Where each field's quotient and remainder rows lie in the concatenated table.

    Attributes:
        offsets: int64 [F] each field's first dataset id (feature map `offset`).
        sizes: int64 [F] each field's ids (feature map `vocab_size`).
        collisions: m, ids per quotient row.
        quotient_offsets: int64 [F] first quotient row of each field.
        remainder_offsets: int64 [F] first remainder row of each field.
        num_rows: rows of the table (all fields' quotient and remainder rows).
        combiner: how a field's two embeddings combine ("product" or "sum", `combine`).
    """

    offsets: np.ndarray
    sizes: np.ndarray
    collisions: int
    quotient_offsets: np.ndarray
    remainder_offsets: np.ndarray
    num_rows: int
    combiner: str = "product"

    @classmethod
    def from_fields(cls, fields: list[dict], collisions: int,
                    combiner: str = "product") -> "QRLayout":
        """The layout of a feature map's `fields` (in column order) with m = `collisions`.

        Args:
            fields: the feature map's per-field entries (`offset`, `vocab_size`).
            collisions: m >= 1, ids per quotient row.
            combiner: "product" or "sum" (`combine`).
        """
        if isinstance(collisions, bool) or int(collisions) != collisions or collisions < 1:
            raise ValueError(f"qr collisions must be an integer >= 1 (got {collisions!r})")
        if combiner not in COMBINERS:
            raise ValueError(f"unknown qr combiner {combiner!r}; expected one of {COMBINERS}")
        m = int(collisions)
        sizes = np.array([f["vocab_size"] for f in fields], np.int64)
        quotients = -(-sizes // m)
        remainders = np.minimum(sizes, m)
        per_field = quotients + remainders
        starts = np.concatenate([[0], np.cumsum(per_field)[:-1]]).astype(np.int64)
        return cls(offsets=np.array([f["offset"] for f in fields], np.int64), sizes=sizes,
                   collisions=m, quotient_offsets=starts,
                   remainder_offsets=starts + quotients, num_rows=int(per_field.sum()),
                   combiner=combiner)

    @property
    def vocab_size(self) -> int:
        """Dataset ids the layout covers (the feature map's `vocab_size`)."""
        return int(self.offsets[-1] + self.sizes[-1]) if len(self.sizes) else 0

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """int32 [B, 2F] table rows of dataset ids [B, F]: (quotient, remainder) per field."""
        return self._rows(np, np.int64, ids).astype(np.int32)

    def jnp_rows(self, ids):
        """`rows` in jax.numpy, for use inside jit: int32 [..., F] ids -> int32 [..., 2F].

        int32 throughout: dataset ids and table rows are below 2^31 (the feature map's
        offsets are checked against int32 at prepare). An id outside its field (the id-0
        padding of an eval batch, in a later field) gets some row, as with `rows`; such
        rows are masked out of every metric and never trained on.
        """
        import jax.numpy as jnp  # here: the numpy side stays importable without jax

        return self._rows(jnp, jnp.int32, ids)

    def _rows(self, xp, dtype, ids):
        """`rows` in array module `xp` (numpy or jax.numpy), computed in `dtype`."""
        local = xp.asarray(ids, dtype) - xp.asarray(self.offsets, dtype)
        quotient = local // self.collisions + xp.asarray(self.quotient_offsets, dtype)
        remainder = local % self.collisions + xp.asarray(self.remainder_offsets, dtype)
        return xp.stack([quotient, remainder], axis=-1).reshape(local.shape[:-1] + (-1,))


def combine(embeddings, combiner: str = "product"):
    """[B, 2F, D] embeddings of `QRLayout.rows` -> [B, F, D] (numpy or jax arrays).

    Args:
        embeddings: the rows' embeddings, quotient and remainder of each field adjacent.
        combiner: "product" (element-wise, Shi et al.'s best) or "sum".
    """
    if combiner not in COMBINERS:
        raise ValueError(f"unknown qr combiner {combiner!r}; expected one of {COMBINERS}")
    batch, columns, dim = embeddings.shape
    pairs = embeddings.reshape(batch, columns // 2, 2, dim)
    if combiner == "product":
        return pairs[:, :, 0] * pairs[:, :, 1]
    return pairs[:, :, 0] + pairs[:, :, 1]
