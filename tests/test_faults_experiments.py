"""Issue 26, the experiment runners: a work dir holding another config's runs is refused
at once (before data is prepared or anything trains), in one line, not a traceback."""
import os
import subprocess
import sys

from experiments import datasets
from experiments import paper
from mlctr.configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_experiment_workdir_of_another_config_is_one_line_and_early(tmp_path):
    workdir = tmp_path / "exp"
    workdir.mkdir()
    config = tiny.get_config()
    flags = {"dataset": "", "raw": "", "data_dir": "", "feature_spec": ""}  # the runner's
    paper.check_workdir(config, str(workdir), flags)
    paper.check_workdir(config, str(workdir), flags)  # the same: accepted
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.finetune", f"--workdir={workdir}",
         "--config=mlctr/configs/tiny.py", "--config.mutual.alpha=0.25", "--seeds=0",
         "--compilation_cache="], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if ": error: " in l]
    assert lines == [f"experiments.finetune: error: {workdir} holds the runs of another experiment "
                     f"config (mutual.alpha: checkpoint {config.mutual.alpha}, config 0.25; "
                     f"recorded in {workdir / paper.EXPERIMENT_RECORD}); move it away or "
                     "choose another --workdir"], proc.stderr[-3000:]
    assert sorted(os.listdir(workdir)) == [paper.EXPERIMENT_RECORD]  # nothing prepared
    assert sorted(os.listdir(tmp_path)) == ["exp"]


def test_symlink_planted_at_the_concatenated_raw_temporary_is_not_followed(tmp_path):
    """The shared rows were concatenated through `<raw>.tmp`: a link there redirected them
    into any file."""
    source = tmp_path / "shared"
    source.mkdir()
    (source / "a.txt").write_text("1\tx\n")
    (source / "b.txt").write_text("0\ty\n")
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    raw = tmp_path / "data" / "raw.txt"
    raw.parent.mkdir()
    os.symlink(victim, str(raw) + ".tmp")
    datasets._concatenate_shared("criteo", str(source), str(raw))
    assert raw.read_text() == "1\tx\n0\ty\n" and victim.read_text() == "keep me\n"
