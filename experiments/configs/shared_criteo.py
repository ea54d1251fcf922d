"""The paper's claims on the real Criteo rows in ../shared/data (about 10.4k rows).

  python -m experiments.finetune --config=experiments/configs/shared_criteo.py \
      --dataset=shared_criteo --workdir=runs/shared_criteo/finetune \
      --pretrain_root=runs/shared_criteo/pretrain --seeds=0,1,2,3,4,5,6,7,8,9

The regime (experiments/configs/shared_real.py): batch 128 (about 65 updates an
epoch of the ~8.4k train rows, where 1024 gives 8), BARS pretraining at lr 1e-3
to early stopping (eval each epoch, patience 2, at most 10 epochs), finetuning
at lr 3e-4 evaluated once an epoch for up to 3 epochs, so both the
control and the mutual arm train at least an epoch (~65 updates); BARS
x4_001 vocabularies (min count 10), which on this few rows leave most categorical values out of
vocabulary: the 13 numeric fields carry most of the signal. Power lines use
the paper's Criteo effect, +0.37% relative AUC.
"""
import ml_collections

from experiments.configs import shared_real


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return shared_real.get_config(arg)
