"""The diversity study: synthetic data whose click function favours different peers.

  python experiments/diversity.py --config=experiments/configs/diversity.py \
      --workdir=runs/diversity --seeds=0,1,2,3,4 --diversities=0,1,2,4

For each `diversity` (mlctr/data/synthetic_hidden.py; the variance of the DCN / IPNN /
FiBiNET / deep-MLP parts over that of the shared parts) a synthetic Criteo-format
file of 60k rows (48k train, 6k valid, 6k test) with the same rows and seed 2018 but
its own labels. Per seed: the four paper peers pretrained independently with the BARS
schedule (Adam lr 1e-3, evaluated each epoch, lr x0.1 on a non-improving evaluation,
early stop after patience 2, at most 6 epochs), then finetuned from the best weights
independently (control) and mutually, 2 epochs at lr 3e-4 evaluated every 47 updates
(4 evaluations, patience 2): about 190 updates of 512 rows per arm, enough for both
arms to move the peers.

Sized for 2 shared CPU cores (the default config's peers, narrower: embedding 8, DNN
64x2, FiBiNET DNN 32): each seed of one setting (pretrain + 2 finetunes) takes about
2 minutes there, 4 settings x 5 seeds about 40 minutes.
"""
import ml_collections

from mlctr.configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The default config, resized for the diversity study (see the module docstring)."""
    config = default.get_config(arg)
    with config.unlocked():
        config.data.num_rows = 40_000
        for key in ("deepfm", "dcn", "ipnn", "fibinet"):
            config.models[key].dnn_hidden_units = (64, 64)
        config.models.fibinet.dnn_hidden_units = (32,)
        config.train.batch_size = 1024
        config.train.num_epochs = 8
        config.train.eval_steps = 0       # each epoch (BARS)
        config.train.patience = 2
        config.train.log_steps = 100
        config.checkpoint.ckpt_steps = 0  # short runs: rerun rather than resume
        config.finetune.learning_rate = 3e-4
        config.finetune.num_epochs = 2
        config.finetune.eval_steps = 16
        config.finetune.patience = 2
    return config
