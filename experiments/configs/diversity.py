"""The diversity study: synthetic data whose click function favours different peers.

  python -m experiments.diversity --config=experiments/configs/diversity.py \
      --workdir=runs/diversity --seeds=0,1,2,3,4 --diversities=0,1,4 \
      --results_dir=experiments/results

For each `diversity` (mlctr/data/synthetic/hidden.py: the variance of the DCN / IPNN /
FiBiNET / deep-MLP parts over that of the shared parts) a synthetic Criteo-format file
of 40k rows (32k train, 4k valid, 4k test), generated with seed 2018: the same rows at
every setting, its own labels. Per seed: the four paper peers pretrained independently
with the BARS schedule (Adam lr 1e-3, evaluated each epoch, lr x0.1 on a non-improving
evaluation, early stop after patience 2; the cap of 8 epochs is not reached), then
finetuned from their best weights independently (control) and mutually: 2 epochs of
31 updates at lr 3e-4, evaluated every 16 updates with patience 2, so both arms take
tens of updates at a learning rate that moves the peers.

Sized for 2 CPU cores shared with other jobs: the default config's peers, narrower (DNN
64x2, FiBiNET DNN 32), batch 1024. 40k rows are few: the peers stay far below Bayes and
disagree, which is the regime the study asks about; one seed of one setting (pretrain
+ 2 finetunes) takes 3-7 minutes on loaded cores.
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
