"""A finetune evaluates its starting point (step 0), so early stopping can return the
pretrained weights (issue 25, item 9)."""
import json
import os

from mlctr.run import train

from tiny_runs import make_tiny_config


def test_finetune_evaluates_step_zero_and_can_keep_the_pretrained_weights(tiny_data_dir,
                                                                          tmp_path):
    pretrain_dir = str(tmp_path / "pretrain")
    pretrained = train.train_and_evaluate(make_tiny_config(tiny_data_dir), pretrain_dir)
    config = make_tiny_config(tiny_data_dir, eval_steps=10, max_steps=20, patience=100)
    with config.unlocked():
        config.init_from = pretrain_dir
        config.optimizer.learning_rate = 1.0  # every finetuned step makes the peers worse
    workdir = str(tmp_path / "finetune")
    results = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 10, 20]
    for name in ("deepfm", "dcn"):
        # Step 0 measures the pretrained weights exactly ...
        assert evals[0]["valid"][name] == pretrained["valid"][name]
        # ... and, nothing finetuned being better, they are the finetune's best.
        assert all(r["valid"][name]["auc"] < evals[0]["valid"][name]["auc"] for r in evals[1:])
    assert results["schedule"]["best_step"] == [0, 0]
    assert results["valid"] == pretrained["valid"] and results["test"] == pretrained["test"]


def test_fresh_run_has_no_step_zero_evaluation(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(make_tiny_config(tiny_data_dir, eval_steps=25, max_steps=25),
                             workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [r["step"] for r in map(json.loads, f) if r["kind"] == "eval"] == [25]
