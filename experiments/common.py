"""Flags and set-up shared by the experiment runners (python -m experiments.<claim>).

Every runner takes:
  --workdir        where table.md, results.json and the figures go
  --config         base config file (default mlctr/configs/default.py), with
                   field overrides, e.g. --config.data.num_rows=200000
  --seeds          comma-separated seeds (default 0,1,2); each seed pairs the arms
  --dataset        synthetic | shared_criteo | shared_avazu | criteo | avazu
  --raw            the Kaggle file for criteo / avazu
  --pretrain_root  where pretrained peers are cached (default <workdir>/pretrain);
                   point several runners at one root to share pretraining
  --compilation_cache  JAX's persistent compilation cache, so that seeds and
                   arms reuse the compiled steps ('' disables)
"""
import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from experiments import paper
from mlctr import distributed
from mlctr import locking
from mlctr.data.errors import DataError
from mlctr.run import checkpoint
from mlctr.run import errors
from mlctr.run import stopping
from mlctr import study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(REPO, "mlctr/configs/default.py"),
                                "Base config file.", lock_config=False)
flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
flags.DEFINE_enum("dataset", "synthetic", paper.DATASET_CHOICES, "Dataset.")
flags.DEFINE_string("raw", "", "Raw Kaggle file (criteo / avazu).")
flags.DEFINE_string("pretrain_root", "", "Pretrained-peer cache (default <workdir>/pretrain).")
flags.DEFINE_string("compilation_cache", os.path.expanduser("~/.cache/mlctr/xla"),
                    "Persistent XLA compilation cache ('' disables).")


# Expected faults whose message is one complete line: printed so, without a traceback.
CLEAR_ERRORS = (paper.ExperimentError, errors.RunError, errors.NonFiniteLossError,
                checkpoint.CheckpointError, locking.LockedError, DataError)


class _OneLine(app.ExceptionHandler):
    """`<runner>: error: <message>` and exit 1 for CLEAR_ERRORS, `<runner>: <message>` and
    exit 143 for a SIGTERM stop (absl would print a traceback and re-raise; os._exit,
    since absl ignores a SystemExit raised here)."""

    def wants(self, exc) -> bool:
        return isinstance(exc, CLEAR_ERRORS + (errors.Preempted,))

    def handle(self, exc) -> None:
        name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "experiments"
        preempted = isinstance(exc, errors.Preempted)
        sys.stdout.flush()
        os.write(sys.stderr.fileno(),
                 f"{name}: {'' if preempted else 'error: '}{exc}\n".encode())
        os._exit(stopping.PREEMPTED_EXIT_CODE if preempted else 1)


def setup():
    """Returns (config, workdir, seeds, pretrain_root, effect_pct) from the flags.

    effect_pct is the paper's relative AUC effect the power lines use for this
    dataset (study.paper_effect).
    """
    app.install_exception_handler(_OneLine())
    distributed.configure_runtime(FLAGS.compilation_cache)
    if jax.process_count() == 1:  # several: JAX's preemption service owns SIGTERM
        stopping.install()  # SIGTERM stops within seconds in every phase (mlctr.main's too)
    config = FLAGS.config
    workdir = os.path.abspath(FLAGS.workdir)
    os.makedirs(workdir, exist_ok=True)
    # Before any work: a work dir of another config is refused now, in one line.
    paper.check_workdir(config, workdir, {"dataset": FLAGS.dataset, "raw": FLAGS.raw})
    seeds = [int(s) for s in FLAGS.seeds.split(",") if s.strip()]
    if not seeds:
        raise ValueError("--seeds is empty")
    pretrain_root = os.path.abspath(FLAGS.pretrain_root or os.path.join(workdir, "pretrain"))
    paper.configure_dataset(config, FLAGS.dataset, os.path.dirname(pretrain_root), FLAGS.raw)
    effect_pct, _ = study.paper_effect(FLAGS.dataset)
    return config, workdir, seeds, pretrain_root, effect_pct

