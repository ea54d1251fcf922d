"""Sparse (row-wise) embedding updates: a step reads and writes only the rows its batch touches.

With dense optax Adam every step reads and writes every row of every embedding table and
both of its moments, although a batch of B examples x F fields touches at most B*F rows.
`SparseOptimizer` instead updates, for every leaf named `embedding_table`, only the rows
present in the batch; the other parameters (DNN, cross, bilinear, biases) keep dense Adam.

How a sparse step works (see `mutual.make_train_step`):
  1. `batch_rows(ids, vocab_size)`: the distinct ids of the batch, sorted, padded to the
     static size K = min(B*F, vocab_size) with out-of-range ids (vocab_size + position, so
     the list stays increasing and distinct), and `inverse`, the position of each id in
     it (by a bitmap of the vocabulary or by a sort, whichever is cheaper for its size).
     Computed once per step: all peers share the batch, so it serves every peer and every
     table.
  2. `take_rows`: every table [V, d] becomes its K gathered rows [K, d] (padding rows read
     as 0, so they add nothing to the L2 penalty or the gradient norm), every
     row-optimizer state leaf likewise. The model runs as
     `model.clone(vocab_size=K)` on `inverse`, so the gradient is a [K, d] array.
  3. `SparseOptimizer.update` on this gathered view: clip, dense Adam on the non-table
     leaves, the row optimizer on the gathered rows.
  4. `put_rows` scatters the new rows and row states back (padding slots are dropped).
     With the state donated, XLA updates the tables in place, so a step costs O(B*F*d)
     whatever the vocabulary size (only where the rows lie in memory changes: at 10M rows
     every gathered row is a cache miss, at 10k the tables sit in cache).

Works for stacked peers under 'vmap' and 'unroll' (tables [n, V, d] are gathered and
scattered along axis 1 with the shared rows) and on the trainer's mesh: on a peer mesh each
device gathers its own peers' rows; on a data mesh the rows of the global batch are computed
redundantly on every device and the [K, d] row gradients are what gets all-reduced; on a
table mesh (tables and row states split by rows, mlctr/sharding.py) each device gathers the
rows it holds, one all-reduce over `table` completes the [K, ...] view, and each device
scatters back only its own rows.

Semantics, and where they differ from dense optax (all documented choices):
  * lazy_adam: per row r a step count c_r, first moment m_r and second moment v_r (stored
    packed as one float32 row [m_r | v_r | c_r], see `row_state_fields`). When
    the row is in the batch (even if its gradient happens to be 0): c_r += 1,
    m_r = b1 m_r + (1 - b1) g_r, v_r = b2 v_r + (1 - b2) g_r^2 and
    w_r -= lr * (m_r / (1 - b1^c_r)) / (sqrt(v_r / (1 - b2^c_r)) + eps).
    A row not in the batch keeps w_r, m_r, v_r and c_r bitwise. So bias correction uses the
    row's own count of updates, not the global step (TF's LazyAdam and torch's SparseAdam
    use the global step, which over-corrects rare rows: their moments are fresh but the
    correction has decayed to 1). Dense Adam instead decays m and v of unseen rows every
    step and keeps moving them with their stale momentum. When every row is in every
    batch, lazy Adam equals dense Adam.
  * adagrad: row-wise Adagrad (FBGEMM's EXACT_ROWWISE_ADAGRAD, the DLRM/TorchRec default):
    one accumulator per row, a_r += mean_j g_rj^2, w_r -= lr * g_r / (sqrt(a_r) + eps),
    a_r starting at 0; eps is the optimizer's Adam eps. State [V] per table, not [V, d].
  * sgd: w_r -= lr * g_r. No state. Equals dense SGD exactly (the gradient of an unseen
    row is 0), which the tests check.
  * Learning rate: every row optimizer uses the peer's learning rate (the one the trainer
    decays per peer); the non-table parameters always use Adam.
  * Embedding L2 (`embedding_regularizer`): FuxiCTR penalises whole tables every step. The
    sparse step penalises only the rows of the batch (each distinct row once), as sparse
    trainers do; unseen rows are not shrunk. `net_regularizer` is unchanged.
  * Gradient clipping by global norm: the norm is taken over the dense gradients plus the
    gathered row gradients. Rows outside the batch have zero loss gradient, so for the same
    loss this is the same number as the norm of the dense table gradient; the clipped
    update is identical (with embedding L2 the two losses differ, see above).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

EMBEDDING_OPTIMIZERS = ("dense", "lazy_adam", "adagrad", "sgd")
TABLE_NAME = "embedding_table"


def is_table(path) -> bool:
    """Whether a tree path (from `jax.tree_util.tree_*_with_path`) ends at a table."""
    last = path[-1]
    return getattr(last, "key", last) == TABLE_NAME


def table_mask(params):
    """Tree of bools: True at `embedding_table` leaves."""
    return jax.tree_util.tree_map_with_path(lambda path, _: is_table(path), params)


def _path_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)


def _tables(tree) -> dict[tuple[str, ...], jax.Array]:
    """{('linear', 'embedding', 'embedding_table'): leaf, ...} for every table of `tree`."""
    return {_path_keys(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
            if is_table(path)}


def _lookup(tree: dict, keys: tuple[str, ...]):
    for key in keys:
        tree = tree[key]
    return tree


# ---------------------------------------------------------------------------
# The rows of a batch.


class BatchRows(NamedTuple):
    """The distinct ids of a batch.

    Attributes:
      rows: int32 [K], K = min(ids.size, vocab_size): the distinct ids in increasing order,
        then padding ids vocab_size + position (so the whole list is increasing, distinct,
        and the padding is out of range: gathers read 0, scatters drop it).
      inverse: int32, shape of ids: ids == rows[inverse].
      num_unique: int32 scalar, the number of distinct ids.
    """

    rows: jax.Array
    inverse: jax.Array
    num_unique: jax.Array

    @property
    def size(self) -> int:
        return self.rows.shape[0]


# `batch_rows` uses a bitmap of the vocabulary when it has at most this many rows per id of
# the batch: the sort's cost grows with the ids, the bitmap's with the vocabulary, and they
# cross near this ratio (docs/performance.md, "Measurements behind the code's choices").
BITMAP_MAX_RATIO = 128


def batch_rows(ids: jax.Array, vocab_size: int, method: str = "auto") -> BatchRows:
    """The distinct ids of `ids` with static shapes (no host round trip).

    Two ways, with identical results. 'bitmap': mark every id in a [vocab_size] byte array,
    pack it into 32-bit words, and number the distinct ids in increasing order by a
    cumulative sum of the words' popcounts (O(vocab_size / 32)) plus a popcount within the
    word; O(vocab_size) bytes of work in all. 'sort': sort the ids (one single-operand sort,
    XLA's CPU fast path; sorting (id, position) pairs for the inverse is much slower there)
    and find each id among the distinct ones with `bucketed_search`; O(ids log ids).
    'auto' takes 'bitmap' when vocab_size <= BITMAP_MAX_RATIO x ids.size.

    Args:
      ids: int [..., F] feature ids in [0, vocab_size).
      vocab_size: rows of the tables; padding ids start there.
      method: 'auto', 'bitmap' or 'sort'.

    Returns:
      BatchRows with K = min(ids.size, vocab_size) slots.
    """
    flat = ids.reshape(-1).astype(jnp.int32)
    # A batch cannot hold more distinct ids than the table has rows.
    size = min(flat.shape[0], vocab_size)
    if vocab_size + size > jnp.iinfo(jnp.int32).max:
        raise ValueError(f"vocab_size {vocab_size} + batch ids {size} overflows int32")
    if method == "auto":
        method = "bitmap" if vocab_size <= BITMAP_MAX_RATIO * flat.shape[0] else "sort"
    padding = jnp.int32(vocab_size) + jax.lax.iota(jnp.int32, size)
    if method == "bitmap":
        num_words = -(-vocab_size // 32)
        present = jnp.zeros((num_words * 32,), jnp.uint8).at[flat].set(1, mode="drop")
        words = jnp.sum(present.reshape(num_words, 32).astype(jnp.uint32)
                        << jax.lax.iota(jnp.uint32, 32), axis=1, dtype=jnp.uint32)
        counts = jax.lax.population_count(words).astype(jnp.int32)
        earlier = jnp.cumsum(counts) - counts  # distinct ids in the words before
        word_index = flat >> 5
        below = jnp.take(words, word_index, mode="clip") & (
            (jnp.uint32(1) << (flat & 31).astype(jnp.uint32)) - jnp.uint32(1))
        inverse = (jnp.take(earlier, word_index, mode="clip")
                   + jax.lax.population_count(below).astype(jnp.int32))
        # Every slot < num_unique receives its id (duplicates write the same value).
        rows = padding.at[inverse].set(flat, mode="drop")
        return BatchRows(rows, inverse.reshape(ids.shape), earlier[-1] + counts[-1])
    if method != "sort":
        raise ValueError(f"batch_rows method must be 'auto', 'bitmap' or 'sort', got {method!r}")
    sorted_ids = jax.lax.sort(flat)
    is_first = jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
    slot = jnp.cumsum(is_first.astype(jnp.int32)) - 1
    rows = padding.at[jnp.where(is_first, slot, size)].set(sorted_ids, mode="drop")
    inverse = bucketed_search(rows, flat, vocab_size)
    return BatchRows(rows, inverse.reshape(ids.shape), slot[-1] + 1)


def bucketed_search(rows: jax.Array, ids: jax.Array, vocab_size: int) -> jax.Array:
    """Position of each of `ids` in `rows` (increasing; every id present; padding >= vocab_size).

    A plain binary search over K slots takes log2(K) rounds of gathers over all B*F ids.
    Here ids are first bucketed
    by their high bits, id >> s with 2^s ~ vocab_size / K, so there are about K buckets;
    a histogram of `rows` by bucket and its cumulative sum give where each bucket starts,
    and as a bucket spans 2^s ids it holds at most 2^s rows: s rounds of binary lifting
    finish the search (0 rounds, a direct lookup, when vocab_size <= K; 6 at 10M rows,
    batch 4096 x 39). Shapes and round count are static.
    """
    size = rows.shape[0]
    shift = max(0, (vocab_size // max(size, 1)).bit_length() - 1)  # 2^shift <= V / K
    num_buckets = ((vocab_size - 1) >> shift) + 1
    real = rows < vocab_size
    counts = jnp.zeros((num_buckets,), jnp.int32).at[
        jnp.where(real, rows >> shift, num_buckets)].add(1, mode="drop")
    starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(counts)])
    position = jnp.take(starts, ids >> shift, mode="clip")
    # Invariant: every row before `position` is < id; the id lies within 2^shift - 1 after.
    for step in reversed(range(shift)):
        probe = position + (1 << step) - 1
        position = jnp.where(jnp.take(rows, probe, mode="clip") < ids, position + (1 << step),
                             position)
    return position.astype(jnp.int32)


def _per_peer(axis: int) -> bool:
    """Whether a gather/scatter along axis 1 of stacked peers' [n, V, ...] arrays runs as
    one op per peer.

    On CPU, XLA's gather and scatter along axis 1 of [n, V, w] (one index list shared by
    the n peers) are slower than n gathers/scatters along axis 0 of the contiguous [V, w]
    slices (docs/performance.md, "What makes the step fast"). Elsewhere (GPU/TPU, where the
    stacked arrays may be sharded over a peer mesh) one batched op is kept.
    """
    return axis == 1 and jax.default_backend() == "cpu"


def take_rows(table: jax.Array, rows: jax.Array, axis: int = 0, *,
              zero_padding: bool = True) -> jax.Array:
    """table rows `rows` along `axis`; padding (out-of-range) rows read as 0.

    Gathers in 'clip' mode and zeroes the padding with a select: on CPU XLA's 'fill'
    gather is slower. `zero_padding=False` skips the select where the
    padding rows' values do not matter (optimizer state: their updates are dropped).
    """
    if _per_peer(axis):
        return jnp.stack([take_rows(table[i], rows, 0, zero_padding=zero_padding)
                          for i in range(table.shape[0])])
    gathered = jnp.take(table, rows, axis=axis, mode="clip")
    if not zero_padding:
        return gathered
    shape = [1] * gathered.ndim
    shape[axis] = rows.shape[0]
    valid = (rows < table.shape[axis]).reshape(shape)
    return jnp.where(valid, gathered, jnp.zeros((), gathered.dtype))


def put_rows(table: jax.Array, rows: jax.Array, values: jax.Array, axis: int = 0) -> jax.Array:
    """table with rows `rows` along `axis` set to `values` (padding rows dropped).

    `rows` comes from `batch_rows`: increasing and distinct, which lets XLA emit a plain
    in-place scatter.
    """
    values = values.astype(table.dtype)
    if _per_peer(axis):
        for i in range(table.shape[0]):
            table = table.at[i, rows].set(values[i], mode="drop", indices_are_sorted=True,
                                          unique_indices=True)
        return table
    index = (slice(None),) * axis + (rows,)
    return table.at[index].set(values, mode="drop", indices_are_sorted=True, unique_indices=True)


def take_table_rows(params, rows: jax.Array, axis: int = 0):
    """params with every `embedding_table` leaf replaced by its gathered rows."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: take_rows(x, rows, axis) if is_table(path) else x, params)


def put_table_rows(params, new_params, rows: jax.Array, axis: int = 0):
    """Inverse of `take_table_rows`: tables get their rows scattered, other leaves replaced."""
    return jax.tree_util.tree_map_with_path(
        lambda path, old, new: put_rows(old, rows, new, axis) if is_table(path) else new,
        params, new_params)


# ---------------------------------------------------------------------------
# Row optimizers.


def _row_init(kind: str, table: jax.Array) -> dict[str, jax.Array]:
    vocab_size, dim = table.shape
    if kind == "lazy_adam":
        # One float32 row [mu (d) | nu (d) | count (1)] per table row: a step gathers and
        # scatters one [K, 2d+1] array per table instead of three (mu, nu, count), one
        # random access per row instead of three (at 10M rows each is a cache miss). The
        # count is exact in
        # float32 up to 2^24 updates of one row.
        return {"slots": jnp.zeros((vocab_size, 2 * dim + 1), jnp.float32)}
    if kind == "adagrad":
        return {"accumulator": jnp.zeros((vocab_size,), jnp.float32)}
    if kind == "sgd":
        return {}
    raise ValueError(f"unknown row optimizer {kind!r}")


def row_state_fields(kind: str, state: dict) -> dict:
    """A table's row state by field name, for reading (numpy or jax arrays, any leading axes).

    lazy_adam packs its state into one array `slots` [..., V, 2d+1]; this returns
    {'mu': [..., V, d], 'nu': [..., V, d], 'count': [..., V]} (views). Other kinds are
    stored by name already and returned as they are.
    """
    if kind != "lazy_adam":
        return dict(state)
    slots = state["slots"]
    dim = (slots.shape[-1] - 1) // 2
    return {"mu": slots[..., :dim], "nu": slots[..., dim:2 * dim], "count": slots[..., 2 * dim]}


def _row_update(kind: str, grads: jax.Array, state: dict, *, b1: float, b2: float, eps: float):
    """Direction (to be scaled by -lr) and new state of gathered rows [K, d]."""
    if kind == "lazy_adam":
        # optax.scale_by_adam's expressions, with a per-row count, except that the bias
        # corrections 1 - b ** count are computed as -expm1(count * log b), b rounded to
        # float32 as optax's is: XLA:CPU's pow is costly where the expm1 fuses, and the
        # expm1 form is closer to the exact value (docs/performance.md, "Measurements
        # behind the code's choices").
        fields = row_state_fields(kind, state)
        count = fields["count"] + 1
        mu = (1 - b1) * grads + b1 * fields["mu"]
        nu = (1 - b2) * (grads ** 2) + b2 * fields["nu"]
        log_b1, log_b2 = (math.log(float(np.float32(b))) for b in (b1, b2))
        mu_hat = mu / (-jnp.expm1(count * log_b1))[:, None].astype(mu.dtype)
        nu_hat = nu / (-jnp.expm1(count * log_b2))[:, None].astype(nu.dtype)
        direction = mu_hat / (jnp.sqrt(nu_hat) + eps)
        slots = jnp.concatenate([mu, nu, count[:, None]], axis=-1).astype(jnp.float32)
        return direction, {"slots": slots}
    if kind == "adagrad":
        accumulator = state["accumulator"] + jnp.mean(grads.astype(jnp.float32) ** 2, axis=-1)
        direction = grads / (jnp.sqrt(accumulator)[:, None] + eps).astype(grads.dtype)
        return direction, {"accumulator": accumulator}
    if kind == "sgd":
        return grads, {}
    raise ValueError(f"unknown row optimizer {kind!r}")


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
    """Clip + dense Adam for the network, a row optimizer for the embedding tables.

    Built by `peer_groups.make_optimizer(..., embedding_optimizer=...)`; the step recognises it
    and takes the sparse path. Like the dense optimizer it returns a *direction*: the step
    applies each peer's learning rate.

    `init(params)` takes full parameters; `update(grads, state, params)` works on the
    gathered view (tables and row states replaced by the batch's rows, see
    `take_state_rows`), so it is per peer and vmappable.

    Attributes:
      embedding_optimizer: 'lazy_adam', 'adagrad' or 'sgd' (see the module docstring).
      grad_clip_norm: clip by global norm over all gradients of a peer (<= 0: off).
      b1, b2, eps: Adam's (eps is also row-wise Adagrad's).
    """

    embedding_optimizer: str = "lazy_adam"
    grad_clip_norm: float = 10.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.embedding_optimizer not in EMBEDDING_OPTIMIZERS[1:]:
            raise ValueError(f"unknown embedding_optimizer {self.embedding_optimizer!r}; "
                             f"expected one of {EMBEDDING_OPTIMIZERS}")

    @property
    def _dense(self) -> optax.GradientTransformation:
        # Table leaves pass through the clip (so the norm covers them) and skip Adam: the
        # masked Adam keeps no [V, d] moments for them.
        parts = []
        if self.grad_clip_norm and self.grad_clip_norm > 0:
            parts.append(optax.clip_by_global_norm(self.grad_clip_norm))
        parts.append(optax.masked(optax.scale_by_adam(b1=self.b1, b2=self.b2, eps=self.eps),
                                  lambda params: jax.tree_util.tree_map(
                                      lambda is_t: not is_t, table_mask(params))))
        return optax.chain(*parts)

    def init(self, params) -> dict:
        """{'dense': clip/Adam state (no table moments), 'rows': per-table row states, nested
        like the params ({'embedding': {'embedding_table': {'slots': ...}}, ...})}."""
        return {"dense": self._dense.init(params),
                "rows": traverse_util.unflatten_dict(
                    {keys: _row_init(self.embedding_optimizer, table)
                     for keys, table in _tables(params).items()})}

    def update(self, grads, state: dict, params):
        """One peer's directions on the gathered view; returns (directions, new state)."""
        directions, dense_state = self._dense.update(grads, state["dense"], params)
        row_directions, rows_state = {}, {}
        for keys, row_grads in _tables(directions).items():  # clipped, not yet transformed
            row_directions[keys], rows_state[keys] = _row_update(
                self.embedding_optimizer, row_grads, _lookup(state["rows"], keys),
                b1=self.b1, b2=self.b2, eps=self.eps)
        directions = jax.tree_util.tree_map_with_path(
            lambda path, d: row_directions[_path_keys(path)] if is_table(path) else d,
            directions)
        return directions, {"dense": dense_state, "rows": traverse_util.unflatten_dict(rows_state)}

    @staticmethod
    def take_state_rows(state: dict, rows: jax.Array, axis: int = 0) -> dict:
        """The optimizer state with every row-state leaf replaced by its rows `rows`."""
        return {"dense": state["dense"],
                "rows": jax.tree_util.tree_map(
                    lambda x: take_rows(x, rows, axis, zero_padding=False), state["rows"])}

    @staticmethod
    def put_state_rows(state: dict, new_state: dict, rows: jax.Array, axis: int = 0) -> dict:
        """Inverse of `take_state_rows`."""
        return {"dense": new_state["dense"],
                "rows": jax.tree_util.tree_map(lambda old, new: put_rows(old, rows, new, axis),
                                               state["rows"], new_state["rows"])}

