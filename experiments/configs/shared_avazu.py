"""The paper's claims on the real Avazu rows in ../shared/data (about 9.8k rows).

  python -m experiments.finetune --config=experiments/configs/shared_avazu.py \
      --dataset=shared_avazu --workdir=runs/shared_avazu/finetune \
      --pretrain_root=runs/shared_avazu/pretrain --seeds=0,1,2,3,4,5,6,7,8,9

The regime (experiments/configs/shared_real.py): batch 128 (about 60 updates an
epoch of the ~7.9k train rows, where 1024 gives 8), BARS pretraining at lr 1e-3
to early stopping (eval each epoch, patience 2, at most 10 epochs), finetuning
at lr 3e-4 evaluated once an epoch for up to 3 epochs, so both the
control and the mutual arm train at least an epoch (~60 updates). Avazu has
only categorical fields (x4_001 vocabularies, min count 2), so the embeddings are all there is
to learn and overfit first. Power lines use the paper's Avazu effect, +0.66%
relative AUC.
"""
import ml_collections

from experiments.configs import shared_real


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return shared_real.get_config(arg)
