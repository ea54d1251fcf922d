"""The regime shared by the experiments on the real rows in ../shared/data.

experiments/configs/shared_criteo.py and shared_avazu.py build on it; their
docstrings say why each number is what it is. The rows are few (about 8.4k
train / 1k valid / 1k test after the BARS 8:1:1 split), so:

* batch 128 instead of BARS's 10000 (or the CPU default 1024): 1024 would give
  8 updates an epoch; 128 gives about 65, enough updates for Adam to move the
  peers in a pretrain of a few epochs and in a finetune;
* pretraining with the BARS schedule (lr 1e-3, x0.1 on a non-improving
  evaluation, early stop after 2), evaluated every epoch, up to 10 epochs:
  the peers overfit a few thousand rows within 2-4 epochs, so every run
  early-stops well before the cap, as the paper's protocol asks;
* finetuning at lr 3e-4 (3x below the pretraining's, not 10x: at 1e-4 the
  finetune barely leaves the pretrained weights), evaluated once an epoch, up
  to 3 epochs with patience 2: the pretrained peers sit at their early-stopping
  point, so a finetune evaluated every few updates stops (and keeps its best
  weights) after a dozen updates; evaluated per epoch, every arm trains at
  least one full epoch (about 65 updates) before any weights are kept;
* the CPU-sized peers of mlctr/configs/default.py with DNNs of (64, 64):
  bigger networks only memorise faster on this little data;
* eval batch 2048: one padded batch per split instead of 16384 rows of padding.
"""
import ml_collections

from mlctr.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """default.py with the shared-rows regime above (the dataset comes from --dataset)."""
    config = default.get_config(arg)
    with config.unlocked():
        for name in ("deepfm", "dcn", "ipnn", "wide_deep"):
            config.models[name].dnn_hidden_units = (64, 64)
        # A synthetic-only key, pinned so a change of the default keeps these cached runs valid.
        config.data.num_rows = 100_000
        config.train.batch_size = 128
        config.train.eval_batch_size = 2048
        config.train.num_epochs = 10
        config.train.eval_steps = 0
        config.train.patience = 2
        config.train.log_steps = 100
        config.finetune.learning_rate = 3e-4
        config.finetune.num_epochs = 3
        config.finetune.eval_steps = 0
        config.finetune.patience = 2
    return config
