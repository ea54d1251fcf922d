"""Fixtures shared by the trainer-level tests: a tiny prepared dataset and config."""
import os
import re
import subprocess
import sys

import pytest

# Compiled steps are reused across test runs (CI reruns, local iterations).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/mlctr/xla-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
# Tests run tiny shapes: compile fast rather than optimise (same results).
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

# On a GPU, XLA runs float32 matmuls in TF32, scatter-adds with atomics and picks matmul
# kernels by timing them in each new process (which can change the rounding between
# processes; docs/performance.md, "Measurements behind the code's choices"). The tests
# compare layers
# with numpy references and repeated or resumed runs bitwise, so they ask for full float32
# matmuls, deterministic kernels and no autotuning; as environment variables, so the runs
# that tests start as subprocesses get them too. No effect on CPU.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# Tiny shapes, and trainer runs in subprocesses beside this one: no process may take 75%
# of an accelerator's memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
for _flag in ("--xla_gpu_deterministic_ops=true", "--xla_gpu_autotune_level=0"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

from mlctr.configs import tiny  # noqa: E402


@pytest.fixture(scope="package")
def tiny_data_dir(tmp_path_factory):
    """A prepared 4000-row synthetic Criteo-format dataset (about 3200 / 400 / 400 rows)."""
    from mlctr.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny_synthetic")
    out = str(root / "prepared")
    prepare("synthetic", str(root / "raw" / "synthetic.txt"), out, num_rows=4000, seed=11)
    return out


def make_tiny_config(data_dir: str, peers: str = "deepfm,dcn", **train_overrides):
    """mlctr/configs/tiny.py on the tiny dataset, mode 'train', locked."""
    config = tiny.get_config()
    with config.unlocked():
        config.mode = "train"
        config.data.data_dir = data_dir
        config.peers = peers
        config.train.update(train_overrides)
    config.lock()
    return config


@pytest.fixture
def tiny_config(tiny_data_dir):
    return lambda **kw: make_tiny_config(tiny_data_dir, **kw)


# The run that the resume and multi-process tests interrupt or split (mlctr/run/train.py,
# mlctr/run/checkpoint.py): 60 steps of 64 over 50-step epochs, so it crosses an epoch
# boundary; evaluations at 20, 40, 60; checkpoints every 15 steps.
class ResumableRun:
    TRAIN = dict(num_epochs=2, max_steps=60, eval_steps=20)
    CKPT_STEPS = 15
    REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def __init__(self, data_dir: str):
        self.data_dir = data_dir

    def config(self):
        config = make_tiny_config(self.data_dir, **self.TRAIN)
        with config.unlocked():
            config.checkpoint.ckpt_steps = self.CKPT_STEPS
        return config

    def flags(self, workdir: str) -> list[str]:
        """`mlctr.main` flags for exactly `config()` (resuming checks that they agree)."""
        return ["--config=mlctr/configs/tiny.py", "--config.mode=train",
                "--config.peers=deepfm,dcn", f"--config.data.data_dir={self.data_dir}",
                f"--workdir={workdir}",
                f"--compilation_cache={os.environ['JAX_COMPILATION_CACHE_DIR']}",
                *(f"--config.train.{k}={v}" for k, v in self.TRAIN.items()),
                f"--config.checkpoint.ckpt_steps={self.CKPT_STEPS}"]


@pytest.fixture(scope="package")
def resumable(tiny_data_dir):
    return ResumableRun(tiny_data_dir)


@pytest.fixture(scope="package")
def reference_run(resumable, tmp_path_factory):
    """Work dir of one uninterrupted single-process run of `resumable.config()`."""
    from mlctr.run import train

    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    train.train_and_evaluate(resumable.config(), workdir)
    return workdir


@pytest.fixture
def four_device_tests():
    """`run_four_device_tests`, for the tests that start a 4-device process."""
    return run_four_device_tests


def run_four_device_tests(test_file: str, passed: int, timeout: int = 900) -> None:
    """Runs `test_file`'s tests named *four_device* in a process with 4 forced host CPU
    devices (the test process has already set up JAX with its own device count) and
    checks that `passed` of them passed; skipped inside that process itself."""
    if os.environ.get("MLCTR_TEST_FOUR_DEVICES") == "1":
        pytest.skip("this is the 4-device process")
    env = {**os.environ, "MLCTR_TEST_FOUR_DEVICES": "1", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                         + " --xla_force_host_platform_device_count=4").strip()}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "four_device",
         os.path.abspath(test_file)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
        capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert re.search(rf"\b{passed} passed", proc.stdout), proc.stdout[-3000:]
