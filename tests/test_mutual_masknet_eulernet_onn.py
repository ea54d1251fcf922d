"""MaskNet, EulerNet and ONN as peers: the jitted step with stacked copies of each equals
the per-peer reference (tests/test_mutual.py's `reference_step`)."""
import jax
import jax.numpy as jnp

from mlctr import mutual
from mlctr import peer_groups
from test_mutual import FIELDS, VOCAB, assert_mutual_step_matches_reference, make_batch

MODELS = {
    "masknet": dict(model="masknet", embedding_dim=4, dnn_hidden_units=(8,), net_dropout=0.1,
                    model_type="ParallelMaskNet", parallel_num_blocks=2, parallel_block_dim=4,
                    reduction_ratio=0.5, emb_layernorm=True, net_layernorm=True,
                    embedding_regularizer=1e-3, net_regularizer=1e-4),
    "masknet_serial": dict(model="masknet", embedding_dim=4, dnn_hidden_units=(6, 4),
                           net_dropout=0.1, model_type="SerialMaskNet", reduction_ratio=0.5,
                           emb_layernorm=True, net_layernorm=True, embedding_regularizer=1e-3),
    "onn": dict(model="onn", embedding_dim=3, dnn_hidden_units=(8,), net_dropout=0.1,
                batch_norm=False, embedding_regularizer=1e-3, net_regularizer=1e-4),
    "eulernet": dict(model="eulernet", embedding_dim=3, shape=(4, 2), net_ex_dropout=0.1,
                     net_im_dropout=0.1, layer_norm=True, embedding_regularizer=1e-3,
                     net_regularizer=1e-4),
}


def test_stacked_new_peers_step_equals_per_peer_updates():
    """Two stacked copies of each (one vmapped group per key), a serial MaskNet beside."""
    peers = peer_groups.build_peers("masknet*2,masknet_serial,onn*2,eulernet*2", MODELS,
                               vocab_size=VOCAB, num_fields=FIELDS)
    optimizer = peer_groups.make_optimizer(grad_clip_norm=10.0)
    state = peer_groups.init_state(peers, jax.random.PRNGKey(0), jnp.zeros((2, FIELDS), jnp.int32),
                              optimizer, 1e-2)
    assert_mutual_step_matches_reference(peers, optimizer, state, make_batch(), make_batch(1),
                                         divergence="mse", execution="vmap")
