"""Flags and set-up shared by the experiment runners (python -m experiments.<claim>).

Every runner takes:
  --workdir        where table.md, results.json and the figures go
  --config         base config file (default mlctr/configs/default.py), with
                   field overrides, e.g. --config.data.num_rows=200000
  --seeds          comma-separated seeds or ranges (default 0,1,2; 0..9 is 0 to 9);
                   each seed pairs the arms
  --dataset        any kind mlctr.data.prepare knows (experiments/datasets.py): synthetic,
                   shared_criteo, shared_avazu, criteo, avazu, criteo_1tb, frappe_x1,
                   movielens_x1, criteo_x1, avazu_x1, csv ('' : the config's, else synthetic)
  --raw            its raw file, or the directory of its csv splits / day files
  --data_dir       an already prepared dataset (its feature map says the kind)
  --feature_spec   --dataset=csv: the JSON file naming the label and feature columns
  --effect_pct     the relative AUC effect (%) the power lines are about (default: the
                   paper's figure for Criteo / Avazu, Criteo's elsewhere, said so)
  --pretrain_root  where pretrained peers are cached (default <workdir>/pretrain);
                   point several runners at one root to share pretraining
  --compilation_cache  JAX's persistent compilation cache, so that seeds and
                   arms reuse the compiled steps ('' disables)

Runners built on experiments/replicas.py (finetune) also take:
  --replicas       train all seeds and arms as replicas of one program
                   (mlctr/run/replicas.py) where they fit in memory; off by default:
                   the replica loop lacks the single run's step-0 evaluation, per-peer
                   schedule settings and broken-prediction checks
  --max_replicas   replicas per program (0: as many as fit in memory)
  --replica_execution  vmap (default) | unroll (bitwise the runs alone on CPU)
"""
import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from experiments import analysis
from experiments import datasets
from experiments import paper
from mlctr import distributed
from mlctr import locking
from mlctr import study
from mlctr.configs import validate as config_validation
from mlctr.data.errors import DataError
from mlctr.run import checkpoint
from mlctr.run import errors
from mlctr.run import inputs
from mlctr.run import stopping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(REPO, "mlctr/configs/default.py"),
                                "Base config file.", lock_config=False)
flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds or inclusive ranges (0..9).")
flags.DEFINE_enum("dataset", "", ("",) + datasets.CHOICES,
                  "Dataset kind ('': the config's, else synthetic).")
flags.DEFINE_string("raw", "", "Raw file, or the directory of csv splits / day files.")
flags.DEFINE_string("data_dir", "", "An already prepared dataset directory.")
flags.DEFINE_string("feature_spec", "", "--dataset=csv: its feature spec (JSON).")
flags.DEFINE_float("effect_pct", None, "Relative AUC effect (%) of the power lines "
                   "(default: the paper's Criteo / Avazu figure).")
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
        preempted = isinstance(exc, errors.Preempted)
        sys.stdout.flush()
        os.write(sys.stderr.fileno(),
                 f"{_name()}: {'' if preempted else 'error: '}{exc}\n".encode())
        os._exit(stopping.PREEMPTED_EXIT_CODE if preempted else 1)


# Config keys every runner sets itself, with what sets them instead.
OWNED = {"seed": "from --seeds", "mode": "per phase", "init_from": "from its own pretraining "
         "(--pretrain_root)"}


def setup(owned: dict[str, str] | None = None, synthetic_only: bool = False):
    """Returns (config, workdir, seeds, pretrain_root, effect_pct) from the flags.

    The dataset is the one the flags and the config name (experiments/datasets.py: a
    value the user gave is never replaced; a conflict ends the runner with one line).
    A config key the runner sets itself (OWNED, plus the runner's `owned`: key -> what
    sets it) given as an override ends it with one line naming the key, as does another
    dataset than synthetic where `synthetic_only`. effect_pct is --effect_pct or the
    paper's relative AUC effect for the dataset; the power lines say which
    (analysis.describe_effect).
    """
    app.install_exception_handler(_OneLine())
    distributed.configure_runtime(FLAGS.compilation_cache)
    if jax.process_count() == 1:  # several: JAX's preemption service owns SIGTERM
        stopping.install()  # SIGTERM stops within seconds in every phase (mlctr.main's too)
    config = FLAGS.config
    workdir = os.path.abspath(FLAGS.workdir)
    os.makedirs(workdir, exist_ok=True)
    # Before any work: a work dir of another config is refused now, in one line.
    paper.check_workdir(config, workdir, {"dataset": FLAGS.dataset, "raw": FLAGS.raw,
                                          "data_dir": FLAGS.data_dir,
                                          "feature_spec": FLAGS.feature_spec})
    try:
        seeds = parse_seeds(FLAGS.seeds)
    except ValueError as e:
        _fail(str(e))
    pretrain_root = os.path.abspath(FLAGS.pretrain_root or os.path.join(workdir, "pretrain"))
    overrides = config_flags.get_override_values(FLAGS["config"])
    for key, how in {**OWNED, **(owned or {})}.items():
        if key in overrides:
            _fail(f"config.{key}: {_name()} sets it itself ({how}); drop the override")
    given = datasets.given_keys(config, overrides)
    try:
        with config.unlocked():
            datasets.configure(config, os.path.dirname(pretrain_root), choice=FLAGS.dataset,
                               raw=FLAGS.raw, data_dir=FLAGS.data_dir,
                               feature_spec=FLAGS.feature_spec, given=given)
        if synthetic_only and config.data.dataset != "synthetic":
            raise ValueError(f"{_name()} varies the synthetic generator: it runs on synthetic "
                             f"rows only, not {config.data.dataset}")
        config_validation.validate(config)  # config.<key>: ... (ValueError)
        # Prepared once, before any seed: bad rows end here in one line, not mid-study.
        inputs.ensure_prepared(config, workdir)
    except (ValueError, DataError, errors.RunError) as e:  # DatasetChoiceError is a ValueError
        _fail(str(e))
    if FLAGS.effect_pct is not None and not FLAGS.effect_pct > 0:
        _fail(f"--effect_pct={FLAGS.effect_pct}: must be > 0 (a relative AUC effect in %)")
    effect_pct, source = study.paper_effect(config.data.dataset)
    if FLAGS.effect_pct is not None:
        effect_pct, source = FLAGS.effect_pct, "--effect_pct"
    analysis.describe_effect(effect_pct, study.effect_note(config.data.dataset, effect_pct, source))
    os.makedirs(workdir, exist_ok=True)
    return config, workdir, seeds, pretrain_root, effect_pct


def dataset_label() -> str:
    """The dataset a runner ran on, for titles and file names (--dataset, else the kind)."""
    return FLAGS.dataset or FLAGS.config.data.dataset


def _name() -> str:
    """experiments.<runner>, the module the command ran."""
    return "experiments." + os.path.splitext(os.path.basename(sys.argv[0]))[0]


def _fail(message: str):
    """One line on stderr, exit status 1 (a bad flag or config, not a bug)."""
    sys.stderr.write(f"{_name()}: error: {message}\n")
    sys.exit(1)


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
