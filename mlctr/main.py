"""Entry point: python -m mlctr.main --config=mlctr/configs/default.py --workdir=DIR.

`--config` is a Python config file with `get_config()` (locked: a misspelled
key fails loudly), overridable field by field: `--config.mutual.alpha=0.5`.
`config.mode` picks what runs: `train` (one run of all peers) or
`finetune_study` (pretrain, independent and mutual finetune, results table).

The config and work dir are checked (`train.check_can_start`) and the dataset
prepared (`inputs.ensure_prepared`) before the run starts. Rerunning a command
resumes from the work dir's newest checkpoint. Exit status: 0 done; 1 with a
one-line `mlctr: error: ...` for a nonsense config value, an unusable work dir
or dataset, a work dir another run holds, a NaN/inf loss or a bad checkpoint;
143 after SIGTERM, once the checkpoint is saved. Multi-process and cluster
launches: `launch.sh` and the "Cluster" section of README.md.
"""
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mlctr.run import checkpoint
from mlctr import distributed
from mlctr import locking
from mlctr import study
from mlctr.run import errors
from mlctr.run import inputs
from mlctr.run import train
from mlctr import xla_cpu
from mlctr.data.errors import DataError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Python config file (get_config).",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Run directory.")
flags.DEFINE_string("compilation_cache", os.path.expanduser("~/.cache/mlctr/xla"),
                    "Persistent XLA compilation cache dir ('' disables): the pretrain, control "
                    "and mutual phases and repeated runs reuse compiled steps.")
flags.mark_flags_as_required(["config"])


# Exit status of a run stopped by SIGTERM after saving its checkpoint: what a shell
# reports for a process that SIGTERM ended, so schedulers and wrappers treat it as
# "terminated, not finished"; rerunning the same command resumes it.
PREEMPTED_EXIT_CODE = 143

# Expected failures whose message is complete in one line: printed without a traceback.
# (A ValueError is one only from the config check: elsewhere it would be a bug.)
CLEAR_ERRORS = (errors.RunError, errors.NonFiniteLossError, checkpoint.CheckpointError,
                locking.LockedError, DataError)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:  # before JAX starts its backend: host allocator (MLCTR_HOST_ALLOCATOR), Threefry
        xla_cpu.configure_process()
    except ValueError as e:
        _fail(e)
    distributed.configure_runtime(FLAGS.compilation_cache)
    distributed.initialize_from_env()
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)  # process 0 reports progress for all
    config = FLAGS.config
    logging.info("mode %s, workdir %s", config.mode, FLAGS.workdir)
    try:
        train.check_can_start(config, FLAGS.workdir)  # the config's values, the work dir
    except (ValueError, errors.RunError) as e:  # ValueError: config.<key> from validate
        _fail(e)
    try:
        inputs.ensure_prepared(config, FLAGS.workdir)
        if config.mode == "train":
            train.train_and_evaluate(config, FLAGS.workdir)
        else:
            study.run_finetune_study(config, FLAGS.workdir)
    except errors.Preempted as e:
        _say(f"mlctr: {e}")
        _exit_now(PREEMPTED_EXIT_CODE)
    except CLEAR_ERRORS as e:
        _fail(e)


def _fail(error: Exception):
    """One line on stderr, exit status 1."""
    _say(f"mlctr: error: {error}")
    _exit_now(1)


def _say(line: str):
    """`line` on stderr in one write, so that the processes of a multi-process run, which
    share a stderr, never splice their lines into one another's."""
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), (line + "\n").encode())
    except (AttributeError, OSError, ValueError):  # a stderr without a file (captured)
        print(line, file=sys.stderr, flush=True)


def _exit_now(code: int):
    """Exits without interpreter finalisation.

    Checkpoints are complete and every writer is closed by now (train.py's finally),
    but a daemon input thread may still sit in native JAX code; tearing the
    interpreter down under it can abort the process ("exception not rethrown",
    seen on SIGTERM) and turn a clean stop into exit status -6.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.flush()
    os._exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, config file or override as one line (exit 2)."""
    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            flags.FLAGS.config.keys()  # ml_collections defers a config file's load error
        return rest
    except (flags.Error, AttributeError, KeyError, ValueError, OSError) as e:
        text = str(e.args[0] if e.args else e).replace("\\n", " ").replace("\\'", "'")
        message = " ".join(text.split())
        hint = re.search(r"'([^']+)'\s*(Did you mean .*?\?)", message)
        if hint:  # ml_collections' KeyError text: "'key' Did you mean ...?"
            message = f"no such config key '{hint[1]}' ({hint[2]})"
        sys.stderr.write(f"mlctr: error: {message}\n")
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
