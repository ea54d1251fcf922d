"""The function an export serializes: dataset ids [batch, fields] -> probabilities [batch].

It is `mutual.make_predict_fn` of the chosen peers (one, or all for the ensemble) with
their best weights closed over as constants, then the sigmoid and, for the ensemble, the
mean over peers, as `mlctr.predict` scores (which does both in float64 on the host: the
float32 here differs by at most a few ulps). Quotient-remainder runs map ids to table
rows inside it (`Peers.table_ids`), so the exported model takes dataset ids either way.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mlctr import mutual
from mlctr import peer_groups
from mlctr import predict
from mlctr.data.reader import PreparedDataset
from mlctr.export.manifest import ExportError


@dataclasses.dataclass
class Served:
    """What an export holds: its function and what the manifest says of it.

    Attributes:
      fn: ids int32 [b, F] -> float32 [b] click probabilities (traceable, any b).
      scored_with: the peer's name, or "ensemble".
      peers: the peers it averages (one for a peer).
      num_fields: F.
      vocab_size: ids are in [0, vocab_size).
      config: the run's config; data_dir: its prepared dataset.
    """

    fn: object
    scored_with: str
    peers: list
    num_fields: int
    vocab_size: int
    config: object
    data_dir: str


def _select(peers: peer_groups.Peers, params, batch_stats, names: list[str]):
    """The peers `names` alone (groups narrowed, their stacked variables sliced)."""
    groups, sub_params, sub_stats = [], [], []
    for group, p, s in zip(peers.groups, params, batch_stats):
        keep = [i for i, name in enumerate(group.names) if name in names]
        if not keep:
            continue
        index = jnp.asarray(keep)
        groups.append(dataclasses.replace(group, names=tuple(group.names[i] for i in keep)))
        sub_params.append(jax.tree_util.tree_map(lambda x: x[index], p))
        sub_stats.append(jax.tree_util.tree_map(lambda x: x[index], s))
    return dataclasses.replace(peers, groups=tuple(groups)), tuple(sub_params), tuple(sub_stats)


def _probabilities_fn(peers: peer_groups.Peers, params, batch_stats):
    """ids [b, F] -> mean over the peers of their probabilities [b], weights as constants.

    `mutual.make_predict_fn`'s eval-mode forward pass, peer after peer (its 'unroll'
    execution) and without its unused dropout keys: converters (jax2onnx) have no
    conversion for the random-key primitives, and a served model needs none.
    """

    def fn(ids):
        rows = peers.table_ids(ids.astype(jnp.int32))
        probs = []
        for group, p, s in zip(peers.groups, params, batch_stats):
            has_stats = bool(jax.tree_util.tree_leaves(s))
            for i in range(group.size):
                variables = {"params": jax.tree_util.tree_map(lambda x: x[i], p)}
                if has_stats:
                    variables["batch_stats"] = jax.tree_util.tree_map(lambda x: x[i], s)
                logits = group.model.apply(variables, rows, train=False)
                probs.append(jax.nn.sigmoid(logits.astype(jnp.float32)))
        return probs[0] if len(probs) == 1 else jnp.mean(jnp.stack(probs), axis=0)

    return fn


def load(workdir: str, peer: str = "") -> Served:
    """The serving function of a run's peer (`peer`) or of its ensemble (`peer=''`).

    Raises:
      ExportError: the run has no peer `peer`.
      predict.PredictError, checkpoint.CheckpointError, DataError: as `predict.load_run`
        (not a run, best/ missing or failing its checksums, its dataset missing or changed).
    """
    config, peers, params, batch_stats, data_dir = predict.load_run(workdir)
    if peer and peer not in peers.names:
        raise ExportError(f"run {workdir} has no peer {peer!r}; peers: {list(peers.names)}")
    names = [peer] if peer else list(peers.names)
    peers, params, batch_stats = _select(peers, params, batch_stats, names)
    fn = _probabilities_fn(peers, params, batch_stats)
    dataset = PreparedDataset(data_dir)
    return Served(fn=fn, scored_with=peer or "ensemble", peers=names,
                  num_fields=dataset.num_fields, vocab_size=dataset.vocab_size,
                  config=config, data_dir=data_dir)
