"""Flags and set-up shared by the experiment runners (python -m experiments.<claim>).

Every runner takes:
  --workdir        where table.md, results.json and the figures go
  --config         base config file (default mlctr/configs/default.py), with
                   field overrides, e.g. --config.data.num_rows=200000
  --seeds          comma-separated seeds or ranges (default 0,1,2; 0..9 is 0 to 9);
                   each seed pairs the arms
  --dataset        synthetic | shared_criteo | shared_avazu | criteo | avazu
  --raw            the Kaggle file for criteo / avazu
  --pretrain_root  where pretrained peers are cached (default <workdir>/pretrain);
                   point several runners at one root to share pretraining
  --compilation_cache  JAX's persistent compilation cache, so that seeds and
                   arms reuse the compiled steps ('' disables)

Runners built on experiments/replicas.py (finetune) also take:
  --replicas       train all seeds and arms as replicas of one program
                   (mlctr/run/replicas.py) where they fit in memory (default);
                   --noreplicas: one run after another
  --max_replicas   replicas per program (0: as many as fit in memory)
  --replica_execution  vmap (default) | unroll (bitwise the runs alone on CPU)
"""
import os

from absl import flags
from ml_collections import config_flags

from experiments import paper
from mlctr import distributed
from mlctr import study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(REPO, "mlctr/configs/default.py"),
                                "Base config file.", lock_config=False)
flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds or inclusive ranges (0..9).")
flags.DEFINE_enum("dataset", "synthetic", paper.DATASET_CHOICES, "Dataset.")
flags.DEFINE_string("raw", "", "Raw Kaggle file (criteo / avazu).")
flags.DEFINE_string("pretrain_root", "", "Pretrained-peer cache (default <workdir>/pretrain).")
flags.DEFINE_string("compilation_cache", os.path.expanduser("~/.cache/mlctr/xla"),
                    "Persistent XLA compilation cache ('' disables).")


def setup():
    """Returns (config, workdir, seeds, pretrain_root, effect_pct) from the flags.

    effect_pct is the paper's relative AUC effect the power lines use for this
    dataset (study.paper_effect).
    """
    distributed.configure_runtime(FLAGS.compilation_cache)
    config = FLAGS.config
    workdir = os.path.abspath(FLAGS.workdir)
    os.makedirs(workdir, exist_ok=True)
    seeds = parse_seeds(FLAGS.seeds)
    pretrain_root = os.path.abspath(FLAGS.pretrain_root or os.path.join(workdir, "pretrain"))
    paper.configure_dataset(config, FLAGS.dataset, os.path.dirname(pretrain_root), FLAGS.raw)
    effect_pct, _ = study.paper_effect(FLAGS.dataset)
    return config, workdir, seeds, pretrain_root, effect_pct



def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0..9' (inclusive) or both ('0..3,7') as a list of distinct seeds."""
    seeds = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        first, dots, last = item.partition("..")
        try:
            seeds.extend(range(int(first), int(last) + 1) if dots else [int(item)])
        except ValueError:
            raise ValueError(f"--seeds: {item!r} is not a seed or a range like 0..9") from None
    if not seeds:
        raise ValueError("--seeds is empty")
    return list(dict.fromkeys(seeds))
