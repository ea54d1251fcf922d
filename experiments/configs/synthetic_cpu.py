"""The paper's experiments on the synthetic default, sized for 2 CPU cores.

  python -m experiments.finetune --config=experiments/configs/synthetic_cpu.py \
      --workdir=runs/paper/finetune --pretrain_root=runs/paper/pretrain --seeds=0,1,2

The default config's CPU-sized peers (embedding 8, DNN 128x2, FiBiNET DNN 64) on
100k synthetic Criteo-format rows (about 80k train, 78 updates of 1024 per epoch).
Pretraining: up to 4 epochs with the BARS schedule (lr 1e-3, x0.1 on plateau,
patience 2, evaluated each epoch); finetuning: 1 epoch at lr 1e-4 evaluated every
20 updates. About 4 minutes per seed for pretraining and 40 s per finetune run on
2 quiet CPU cores; see experiments/README.md for what each entry took.
"""
import ml_collections

from mlctr.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config(arg)
    with config.unlocked():
        config.data.num_rows = 100_000
        config.train.num_epochs = 4
        config.train.log_steps = 100
        config.finetune.eval_steps = 20
    return config
