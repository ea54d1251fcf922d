"""CPU-sized config of the paper's experiments on the synthetic default dataset.

  python experiments/finetune.py --config=experiments/configs/synthetic_cpu.py \
      --workdir=runs/paper/finetune --pretrain_root=runs/paper/pretrain --seeds=0,1,2

The four paper peers with BARS's structure at reduced width (embedding 8, DNN 128x2;
FiBiNET's bilinear output is 741 pairs x 8 x 2 wide, so its DNN is 64), 200k
synthetic Criteo-format rows (160k train), batch 1024 so an epoch is 156 updates.
Pretraining: up to 4 epochs with the BARS schedule (lr 1e-3, x0.1 on plateau,
patience 2); finetuning: 1 epoch at lr 1e-4 evaluated 4 times. Each experiment
entry takes minutes per seed on 2 CPU cores (see experiments/README.md).
"""
import ml_collections

from mlctr.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config(arg)
    with config.unlocked():
        config.data.num_rows = 200_000
        for key in config.models:
            m = config.models[key]
            if "embedding_dim" in m:
                m.embedding_dim = 8
            if "dnn_hidden_units" in m and m.get("model", key) != "autoint":
                m.dnn_hidden_units = (128, 128)
                m.net_dropout = 0.0
        config.models.fibinet.dnn_hidden_units = (64,)
        config.models.dcnv2.parallel_dnn_hidden_units = (128, 128)
        config.train.batch_size = 1024
        config.train.num_epochs = 4
        config.train.log_steps = 100
        config.finetune.learning_rate = 1e-4
        config.finetune.num_epochs = 1
        config.finetune.eval_steps = 39
    return config
