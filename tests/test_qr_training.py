"""End to end with quotient-remainder embeddings (config.vocab.qr_collisions): a tiny run
trains, resumes to the numbers of an uninterrupted run, and its exported best weights
(tables of the layout's rows) predict what the run evaluated."""
import os

import numpy as np
import pytest

from mlctr.run import checkpoint
from mlctr import mutual
from mlctr import peer_groups
from mlctr import predict
from mlctr.run import evaluation
from mlctr.run import train
from mlctr.data.reader import PreparedDataset


def qr_config(tiny_config, embedding_optimizer: str, max_steps: int):
    """The tiny two-peer run with m = 4, evaluated and checkpointed every 10 steps."""
    config = tiny_config(max_steps=max_steps, eval_steps=10)
    with config.unlocked():
        config.vocab.qr_collisions = 4
        config.optimizer.embedding_optimizer = embedding_optimizer
        config.checkpoint.ckpt_steps = 10
    return config


@pytest.mark.parametrize("embedding_optimizer", ["lazy_adam", "dense"])
def test_qr_run_trains_resumes_and_predicts(tiny_config, tiny_data_dir, tmp_path,
                                            embedding_optimizer):
    whole_dir, split_dir = str(tmp_path / "whole"), str(tmp_path / "split")
    whole = train.train_and_evaluate(qr_config(tiny_config, embedding_optimizer, 30), whole_dir)
    assert whole["steps"] == 30 and whole["resumed_from"] is None
    first = train.train_and_evaluate(qr_config(tiny_config, embedding_optimizer, 20), split_dir)
    assert first["steps"] == 20
    resumed = train.train_and_evaluate(qr_config(tiny_config, embedding_optimizer, 30), split_dir)
    assert resumed["resumed_from"] == 20 and resumed["steps"] == 30
    assert resumed["test"] == whole["test"]
    for name in ("deepfm", "dcn"):
        assert 0.5 < whole["test"][name]["auc"] < 1.0

    # The exported weights: tables of the layout's rows, fewer than the vocabulary's.
    dataset = PreparedDataset(tiny_data_dir)
    layout = peer_groups.qr_layout(qr_config(tiny_config, embedding_optimizer, 30), dataset)
    weights = checkpoint.load_peer_weights(whole_dir)
    for name in ("deepfm", "dcn"):
        table = weights[name]["params"]["embedding"]["embedding_table"]
        assert table.shape == (layout.num_rows, 4) and layout.num_rows < dataset.vocab_size

    # mlctr.predict rebuilds the layout from the run's config.json and scores the test split
    # as the trainer did, and a raw file row by row.
    _, peers, params, batch_stats, _ = predict.load_run(whole_dir)
    assert (peers.qr_layout.collisions, peers.qr_layout.num_rows) == (4, layout.num_rows)
    logits, labels = evaluation.predict_split(mutual.make_predict_fn(peers), params, batch_stats,
                                         dataset, "test", 256)
    assert evaluation.split_metrics(list(peers.names), logits, labels) == whole["test"]
    raw = os.path.join(os.path.dirname(tiny_data_dir), "raw", "synthetic.txt")
    scored = predict.predict_file(whole_dir, raw, batch_size=500)
    assert len(scored.probs) == 4000 and np.all((scored.probs > 0) & (scored.probs < 1))
