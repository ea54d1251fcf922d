"""The peer-set diversity study: fixed data, peer sets of growing architectural diversity.

  python -m experiments.peer_diversity --config=experiments/configs/diversity_peers.py \
      --workdir=runs/diversity_peers/synthetic --seeds=0,1,2,3,4 \
      --results_dir=experiments/results
  python -m experiments.peer_diversity \
      --config=experiments/configs/diversity_peers.py:shared_criteo --dataset=shared_criteo \
      --workdir=runs/diversity_peers/shared_criteo --seeds=0,1,2,3,4 \
      --results_dir=experiments/results

The argument picks the regime: none (the synthetic default, diversity 0, of
experiments/configs/diversity.py: 40k rows, batch 1024, finetune 2 epochs at lr 3e-4
evaluated every 16 updates) or `shared_criteo` (experiments/configs/shared_real.py:
batch 128, finetune up to 3 epochs at lr 3e-4 evaluated per epoch).

On top of the regime, extra hyperparameter sets that copy a peer exactly under another
key (deepfm_b, deepfm_c, deepfm_d copy deepfm; dcn_b copies dcn). A key used once names
its peer by the key, so one pretraining run holds every peer of every set under its own
name, and each set's finetune takes its peers' weights from that run by name: the target
DeepFM starts every set from the same weights. The copies differ from the original only
by their initialisation (each peer of a run has its own init key); they see the same
data order.
"""
import ml_collections

from experiments.configs import diversity
from experiments.configs import shared_real
from mlctr.configs import args

# copy key -> the key whose hyperparameters it repeats.
COPIES = {"deepfm_b": "deepfm", "deepfm_c": "deepfm", "deepfm_d": "deepfm", "dcn_b": "dcn"}
REGIMES = {"synthetic": diversity.get_config, "shared_criteo": shared_real.get_config}
ARG_KEYS = {"regime": "|".join(REGIMES)}  # the argument convention: mlctr.configs.args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The regime named by `arg` (default synthetic) with the copied peer sets above."""
    regime = args.parse(arg, "experiments/configs/diversity_peers.py",
                        ARG_KEYS).get("regime", "synthetic")
    if regime not in REGIMES:
        raise ValueError(f"experiments/configs/diversity_peers.py: unknown regime {regime!r}; "
                         f"expected one of {sorted(REGIMES)}")
    config = REGIMES[regime]()
    with config.unlocked():
        for copy, source in COPIES.items():
            config.models[copy] = config.models[source].to_dict()
    return config
