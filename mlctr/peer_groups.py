"""Peer groups: which peers a run has, their models, optimizer and stacked state.

A *peer* is one CTR model taking part in mutual learning. Peers that share an
architecture and hyperparameters form a *group*: their parameter pytrees are
stacked on a leading axis of size `n_g`, initialised with
`jax.vmap(model.init)` over one key per peer, and updated together. Groups of
different architectures run side by side inside the same jitted step.

State layout (a plain dict pytree, easy to checkpoint):
  step:          int32 scalar, number of updates done.
  rng:           PRNG key; dropout of peer k at step s uses
                 fold_in(fold_in(rng, s), k).
  params:        tuple over groups of stacked param pytrees.
  batch_stats:   tuple over groups of stacked batch-norm stats ({} if none).
  opt_state:     tuple over groups of stacked optax states (with a
                 `sparse.SparseOptimizer`: {'dense': ..., 'rows': per-row states of
                 the embedding tables, nested like the params}).
  learning_rate: float32 [N], one learning rate per peer (decayed per peer by
                 the trainer; 0 freezes a peer that has early-stopped: the step keeps
                 its params, opt_state and batch_stats bit for bit).

On a mesh with a `table` axis (mlctr/sharding.py) the tables in the state (and their
optimizer state) have `Peers.table_rows` rows: the vocabulary padded with zero rows to a
multiple of mesh.table. No id reaches a padding row: the lookups read ids < vocab_size,
the sparse step's padding slots start at table_rows, and with dense Adam a padding row's
gradient (0 from the loss, L2 of a zero row) is 0, so it stays 0. Exported per-peer
weights (`peer_variables`) drop the padding, so they fit the unpadded models.

With quotient-remainder embeddings (`config.vocab.qr_collisions` = m >= 2,
mlctr/models/qr.py) `Peers.qr_layout` holds the layout, the tables have its `num_rows` rows
(then the padding above) and the models take table rows [B, 2F]. The state, the batches
and the checkpoints keep dataset ids [B, F]: `Peers.table_ids` maps them to table rows in
one place, inside the jitted functions (the train step, before the sparse step gathers
its rows, so lazy Adam updates the quotient and remainder rows the batch touches; the
predict function; `init_state`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mlctr import models as model_zoo
from mlctr import sharding
from mlctr import sparse
from mlctr.models import qr


@dataclasses.dataclass(frozen=True)
class PeerGroup:
    """Peers sharing one architecture and hyperparameter set (one stacked pytree).

    Attributes:
      config_key: key of the hyperparameter set in `config.models`.
      model: the Flax module (same for every peer of the group).
      names: peer names, in the order of the stacked axis.
    """

    config_key: str
    model: nn.Module
    names: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.names)


@dataclasses.dataclass(frozen=True)
class Peers:
    """All peers of a run, grouped; the global peer order is group after group."""

    groups: tuple[PeerGroup, ...]
    # Rows of the embedding tables held in the state; 0: the models' vocab_size (no padding).
    table_rows: int = 0
    # Quotient-remainder embeddings: the layout of the table rows; None: one row per id.
    qr_layout: Optional[qr.QRLayout] = None

    def table_ids(self, ids: jax.Array) -> jax.Array:
        """The table rows the models look up for dataset ids [B, F]: the ids themselves,
        or with QR the [B, 2F] quotient and remainder rows (`QRLayout.jnp_rows`)."""
        return ids if self.qr_layout is None else self.qr_layout.jnp_rows(ids)

    @property
    def vocab_size(self) -> int:
        """Rows of the models' tables (the vocabulary)."""
        return max(group.model.vocab_size for group in self.groups)

    @property
    def stored_rows(self) -> int:
        """Rows of the tables in the training state: the vocabulary plus any padding."""
        return self.table_rows or self.vocab_size

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for group in self.groups for name in group.names)

    @property
    def size(self) -> int:
        return len(self.names)

    def group_slices(self) -> list[slice]:
        """The slice of the global peer axis that each group occupies."""
        slices, start = [], 0
        for group in self.groups:
            slices.append(slice(start, start + group.size))
            start += group.size
        return slices


def parse_peer_spec(spec: str | Sequence[str]) -> list[str]:
    """Splits 'deepfm,dcn,deepfm*2' into ['deepfm', 'dcn', 'deepfm', 'deepfm']."""
    if isinstance(spec, str):
        items = [item.strip() for item in spec.replace("+", ",").split(",")]
    else:
        items = [str(item).strip() for item in spec]
    keys = []
    for item in items:
        if not item:
            continue
        if "*" in item:
            key, _, count = item.partition("*")
            if not count.strip().isdigit() or int(count) < 1:
                raise ValueError(f"bad peer entry {item!r}: expected NAME*COUNT with COUNT >= 1")
            keys.extend([key.strip()] * int(count))
        else:
            keys.append(item)
    if not keys:
        raise ValueError(f"no peers in peer spec {spec!r}")
    return keys


def peer_names(keys: Sequence[str]) -> list[str]:
    """The peers' names, in order, for config keys (`parse_peer_spec`): a key used once
    names its peer; a key used k > 1 times names them key_0 ... key_{k-1}."""
    counts = {key: keys.count(key) for key in keys}
    seen: dict[str, int] = {}
    names = []
    for key in keys:
        names.append(key if counts[key] == 1 else f"{key}_{seen.get(key, 0)}")
        seen[key] = seen.get(key, 0) + 1
    return names


def qr_layout(config, dataset) -> Optional[qr.QRLayout]:
    """The run's quotient-remainder layout: None unless `config.vocab.qr_collisions` >= 2.

    Args:
      config: the run config; a saved config without the `vocab.qr_*` keys (a run that
        predates them) has QR off.
      dataset: the prepared dataset (its feature map's `fields`, in column order).
    """
    vocab = config.get("vocab") or {}
    collisions = int(vocab.get("qr_collisions", 0))
    if not collisions:
        return None
    return qr.QRLayout.from_fields(dataset.feature_map["fields"], collisions,
                                   vocab.get("qr_combiner", "product"))


def build_peers(spec, models_config, *, vocab_size: int, num_fields: int,
                dtype: Any = jnp.float32, table_row_multiple: int = 1,
                qr_layout: Optional[qr.QRLayout] = None) -> Peers:
    """Builds the peer groups named by `spec` from hyperparameter sets.

    Args:
      spec: peer spec, e.g. "deepfm,dcn,pnn,fibinet" or "deepfm*4". Each entry
        is a key of `models_config`.
      models_config: mapping key -> hyperparameters. A set may name its
        architecture with `model` (default: the key itself), so
        `deepfm_small = {model: 'deepfm', dnn_hidden_units: (64,)}` works.
      vocab_size: total rows of the concatenated embedding table.
      num_fields: number of feature fields.
      dtype: compute dtype of the models (a dtype or its name, e.g. 'bfloat16').
      table_row_multiple: the state's tables get rows padded to a multiple of this
        (`sharding.table_row_multiple(mesh)`: rows split over mesh.table must divide).
      qr_layout: quotient-remainder embeddings (`qr_layout(config, dataset)`) of the
        `vocab_size` dataset ids: tables of `qr_layout.num_rows` rows; None: one row per id.

    Returns:
      Peers whose groups follow the first appearance of each key in `spec`.
      A key used once names its peer by the key; a key used k > 1 times names
      them key_0 ... key_{k-1}.
    """
    keys = parse_peer_spec(spec)
    model_fields = dict(vocab_size=vocab_size, num_fields=num_fields, dtype=jnp.dtype(dtype))
    if qr_layout is not None:
        if (qr_layout.vocab_size, len(qr_layout.sizes)) != (vocab_size, num_fields):
            raise ValueError(f"the qr layout covers {qr_layout.vocab_size} ids in "
                             f"{len(qr_layout.sizes)} fields, not the dataset's {vocab_size} "
                             f"in {num_fields}")
        model_fields.update(vocab_size=qr_layout.num_rows, qr_combiner=qr_layout.combiner)
    groups = []
    for key in dict.fromkeys(keys):
        if key not in models_config:
            raise ValueError(
                f"peer {key!r} has no hyperparameter set in config.models "
                f"(known: {sorted(models_config)})")
        hparams = dict(models_config[key])
        arch = hparams.pop("model", key)
        model = model_zoo.create_model(arch, **model_fields, **hparams)
        names = tuple(name for k, name in zip(keys, peer_names(keys)) if k == key)
        groups.append(PeerGroup(config_key=key, model=model, names=names))
    if table_row_multiple < 1:
        raise ValueError(f"table_row_multiple must be >= 1, got {table_row_multiple}")
    rows = model_fields["vocab_size"]
    table_rows = sharding.padded_table_rows(rows, table_row_multiple)
    return Peers(groups=tuple(groups), table_rows=table_rows if table_rows != rows else 0,
                 qr_layout=qr_layout)


def tables_with_rows(tree, rows: int, axis: int):
    """`tree` with every `embedding_table` leaf cut or zero-padded to `rows` along `axis`."""

    def one(path, x):
        if not sparse.is_table(path) or x.shape[axis] == rows:
            return x
        if x.shape[axis] > rows:
            return x[(slice(None),) * axis + (slice(0, rows),)]
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, rows - x.shape[axis])
        return jnp.pad(x, widths)

    return jax.tree_util.tree_map_with_path(one, tree)


def make_optimizer(grad_clip_norm: float = 10.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, embedding_optimizer: str = "dense"
                   ) -> optax.GradientTransformation | sparse.SparseOptimizer:
    """Adam direction without the learning rate (applied per peer in the step).

    FuxiCTR clips gradients at global norm 10 before Adam; `grad_clip_norm <= 0`
    disables clipping. The norm is taken per peer (the step vmaps over peers).

    `embedding_optimizer` other than 'dense' ('lazy_adam', 'adagrad', 'sgd') returns a
    `sparse.SparseOptimizer`: the embedding tables get row-wise updates of only the rows
    in the batch (see mlctr/sparse.py for the exact semantics), the rest Adam; the step
    built by `make_train_step` then takes the sparse path.
    """
    if embedding_optimizer != "dense":
        return sparse.SparseOptimizer(embedding_optimizer, grad_clip_norm, b1, b2, eps)
    parts = []
    if grad_clip_norm and grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    return optax.chain(*parts)


def peer_init_keys(key: jax.Array, num_peers: int, same_init: bool = False) -> jax.Array:
    """One init key per peer; `same_init` deliberately gives them all the same."""
    if same_init:
        return jnp.stack([key] * num_peers)
    return jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(num_peers))


def init_state(peers: Peers, key: jax.Array, sample_ids: jax.Array,
               optimizer: optax.GradientTransformation, learning_rate: float,
               *, same_init: bool = False) -> dict:
    """Initialises every peer from its own key and builds the training state.

    Args:
      peers: the peer groups.
      key: the run's init key.
      sample_ids: an int32 [B, F] batch of dataset ids used to trace shapes.
      optimizer: from `make_optimizer`.
      learning_rate: the initial learning rate of every peer.
      same_init: if True, every peer of a group starts from the same weights.

    Returns:
      The state dict described in the module docstring.
    """
    init_key, rng = jax.random.split(key)
    all_keys = peer_init_keys(init_key, peers.size, same_init)
    params, batch_stats, opt_state = [], [], []
    for group, sl in zip(peers.groups, peers.group_slices()):
        def init_one(k, model=group.model):
            variables = model.init({"params": k, "dropout": k}, peers.table_ids(sample_ids),
                                   train=False)
            return variables["params"], variables.get("batch_stats", {})
        group_params, group_stats = jax.jit(jax.vmap(init_one))(all_keys[sl])
        # Padding rows (mesh.table) are zeros appended to the initialised table.
        group_params = tables_with_rows(group_params, peers.stored_rows, axis=1)
        params.append(group_params)
        batch_stats.append(group_stats)
        opt_state.append(jax.vmap(optimizer.init)(group_params))
    return {
        "step": jnp.zeros((), jnp.int32),
        "rng": rng,
        "params": tuple(params),
        "batch_stats": tuple(batch_stats),
        "opt_state": tuple(opt_state),
        "learning_rate": jnp.full((peers.size,), learning_rate, jnp.float32),
    }


def tree_index(tree, i):
    """Peer i of a stacked tree."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def tree_stack(trees):
    """Trees stacked on a new leading (peer) axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def peer_variables(peers: Peers, params, batch_stats) -> dict[str, dict]:
    """{peer name: {'params': ..., 'batch_stats': ...}} unstacked from the groups, tables
    without their padding rows."""
    out = {}
    for group, p, s in zip(peers.groups, params, batch_stats):
        p = tables_with_rows(p, group.model.vocab_size, axis=1)
        for i, name in enumerate(group.names):
            out[name] = {"params": tree_index(p, i), "batch_stats": tree_index(s, i)}
    return out


def stack_peer_variables(peers: Peers, variables: dict[str, dict]):
    """Inverse of `peer_variables`: (params, batch_stats) tuples over groups, tables padded
    to `peers.stored_rows`."""
    params, batch_stats = [], []
    for group in peers.groups:
        missing = [name for name in group.names if name not in variables]
        if missing:
            raise KeyError(f"no weights for peer(s) {missing}; available: {sorted(variables)}")
        params.append(tables_with_rows(tree_stack([variables[name]["params"]
                                                    for name in group.names]),
                                       peers.stored_rows, axis=1))
        batch_stats.append(tree_stack([variables[name]["batch_stats"] for name in group.names]))
    return tuple(params), tuple(batch_stats)
