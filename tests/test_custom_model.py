"""A user's own model as a peer (mlctr/models/custom.py, docs/models.md "Adding a model").

The model is written into a temporary directory outside mlctr/, named `module:Class` in a
config, trained as a peer beside DeepFM in a tiny mutual run, resumed from its checkpoint
and scored by `mlctr.predict` (in-process and by the CLI, which imports it from the saved
config.json alone); `register()` and the one-line refusals are checked without training.
"""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlctr import models
from mlctr import predict
from mlctr import study
from mlctr.configs import validate
from mlctr.models import regularization
from mlctr.run import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Exactly the worked example of docs/models.md "Adding a model".
USER_MODULE = textwrap.dedent('''
    """My own CTR model, outside mlctr."""
    import flax.linen as nn
    import jax.numpy as jnp

    from mlctr.models.base import EmbeddingModel, flatten
    from mlctr.models.layers.mlp import Linear


    class GatedMLP(EmbeddingModel):
        """logit = w . (relu(W1 x) * sigmoid(W2 x)) + b over the flattened field embeddings."""

        hidden_units: int = 8

        @nn.compact
        def __call__(self, ids, *, train):
            x = flatten(self.embed(ids))
            hidden = nn.relu(Linear(self.hidden_units, dtype=self.dtype, name='value')(x))
            gate = nn.sigmoid(Linear(self.hidden_units, dtype=self.dtype, name='gate')(x))
            logit = Linear(1, dtype=self.dtype, name='output')(hidden * gate)
            return logit[:, 0].astype(jnp.float32)


    class Bare(nn.Module):
        """Only the required fields: float32, no QR, no L2 penalty."""

        vocab_size: int
        num_fields: int

        @nn.compact
        def __call__(self, ids, *, train):
            table = self.param('embedding_table', nn.initializers.normal(0.01),
                               (self.vocab_size, 1))
            return jnp.sum(jnp.take(table, ids, axis=0)[..., 0], axis=1)


    class NoFields(nn.Module):
        @nn.compact
        def __call__(self, ids, *, train):
            return ids[:, 0] * 0.0
''')


@pytest.fixture(scope="module")
def user_module_dir(tmp_path_factory):
    """A directory outside the repository holding `my_ctr_models.py`, importable."""
    directory = tmp_path_factory.mktemp("user_code")
    (directory / "my_ctr_models.py").write_text(USER_MODULE)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(directory))  # what PYTHONPATH does for the user's process
        yield str(directory)
    sys.modules.pop("my_ctr_models", None)


def _config(tiny_config, max_steps):
    config = tiny_config(peers="gated,deepfm", max_steps=max_steps)
    with config.unlocked():
        config.models.gated = dict(model="my_ctr_models:GatedMLP", embedding_dim=4,
                                   hidden_units=8, embedding_regularizer=1e-5)
        config.checkpoint.ckpt_steps = 3
    return config


def test_user_module_trains_beside_deepfm_resumes_and_predicts(user_module_dir, tiny_config,
                                                               tiny_data_dir, tmp_path):
    run = str(tmp_path / "run")
    first = train.train_and_evaluate(_config(tiny_config, max_steps=4), run)
    assert first["peers"] == ["gated", "deepfm"] and first["steps"] == 4
    assert 0.0 < first["test"]["gated"]["auc"] < 1.0
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["models"]["gated"]["model"] == "my_ctr_models:GatedMLP"

    # The same command with a later stop resumes from the checkpoint, the user's peer too.
    again = train.train_and_evaluate(_config(tiny_config, max_steps=6), run)
    assert again["resumed_from"] == 4 and again["steps"] == 6
    assert again["test"]["gated"] != first["test"]["gated"]

    raw_dir = os.path.join(os.path.dirname(tiny_data_dir), "raw")
    raw = os.path.join(raw_dir, sorted(f for f in os.listdir(raw_dir) if f.endswith(".txt"))[0])
    sample = tmp_path / "sample.txt"
    with open(raw) as f:
        sample.write_text("".join(next(f) for _ in range(20)))
    in_process = predict.predict_file(run, str(sample), peer="gated")
    assert in_process.probs.shape == (20,)
    assert np.all((in_process.probs > 0) & (in_process.probs < 1))

    # A fresh process finds the class from config.json alone (no register() call).
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "mlctr.predict", f"--workdir={run}", f"--raw={sample}",
         f"--out={out}", "--peer=gated"], capture_output=True, text=True, cwd=REPO,
        timeout=300, env={**os.environ, "PYTHONPATH": user_module_dir})
    assert proc.returncode == 0, proc.stderr[-2000:]
    probs = [float(line.split(",")[2]) for line in out.read_text().splitlines()[1:]]
    np.testing.assert_allclose(probs, in_process.probs, atol=1e-6)


def test_user_module_in_a_finetune_study(user_module_dir, tiny_config, tmp_path):
    """Pretrain, control and mutual finetune each rebuild the user's peer from its config."""
    config = _config(tiny_config, max_steps=3)
    with config.unlocked():
        config.mode = "finetune_study"
        config.finetune.max_steps = 2
    summary = study.run_finetune_study(config, str(tmp_path / "study"))
    rows = {row["peer"]: row for row in summary["rows"]}
    assert set(rows) == {"gated", "deepfm", "ensemble"}
    assert all(np.isfinite(rows["gated"][key]) for key in ("pretrain_auc", "control_auc",
                                                            "mutual_auc", "auc_gain_pct"))


def test_register_builds_validates_and_refuses(user_module_dir):
    import my_ctr_models

    models.register("gated_mlp_test", my_ctr_models.GatedMLP)
    try:
        assert models.MODELS["gated_mlp_test"] is my_ctr_models.GatedMLP
        models.register("GATED_MLP_TEST", my_ctr_models.GatedMLP)  # the same class again: fine
        assert "hidden_units" in models.model_hparam_names("gated_mlp_test")
        assert models.model_hparam_names("my_ctr_models:GatedMLP") == models.model_hparam_names(
            "gated_mlp_test")
        model = models.create_model("gated_mlp_test", vocab_size=30, num_fields=3,
                                    hidden_units=[5], dtype=jnp.bfloat16, qr_combiner="sum")
        assert (model.hidden_units, model.qr_combiner) == ((5,), "sum")
        with pytest.raises(ValueError, match=r"Unknown hyperparameter\(s\) \['hiden_units'\]"):
            models.create_model("gated_mlp_test", vocab_size=30, num_fields=3, hiden_units=5)
        with pytest.raises(ValueError, match="is taken by"):
            models.register("gated_mlp_test", my_ctr_models.Bare)
        with pytest.raises(ValueError, match="is taken by"):
            models.register("deepfm", my_ctr_models.GatedMLP)
    finally:
        del models.MODELS["gated_mlp_test"]
    with pytest.raises(ValueError, match="without"):
        models.register("a:b", my_ctr_models.GatedMLP)


def test_a_bare_module_runs_without_the_optional_fields(user_module_dir):
    model = models.create_model("my_ctr_models:Bare", vocab_size=30, num_fields=3,
                                dtype=jnp.float32)
    ids = jnp.array([[0, 11, 29], [3, 4, 5]], jnp.int32)
    variables = model.init(jax.random.key(0), ids, train=False)
    assert model.apply(variables, ids, train=False).shape == (2,)
    assert float(regularization.l2_penalty(model, variables)) == 0.0
    with pytest.raises(ValueError, match="no dtype field, so it cannot compute in bfloat16"):
        models.create_model("my_ctr_models:Bare", vocab_size=30, num_fields=3,
                            dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="no qr_combiner field"):
        models.create_model("my_ctr_models:Bare", vocab_size=30, num_fields=3,
                            qr_combiner="product")


@pytest.mark.parametrize("spec, fragment", [
    ("no_such_module_xyz:Net", "cannot import module 'no_such_module_xyz' (ModuleNotFoundError"),
    ("my_ctr_models:Missing", "has no 'Missing'"),
    ("my_ctr_models:NoFields", "lacks the field(s) ['vocab_size', 'num_fields']"),
    ("my_ctr_models:jnp", "not a flax.linen.Module subclass"),
    ("my_ctr_models:", "expected MODULE:CLASS"),
])
def test_bad_model_spec_is_one_config_line(user_module_dir, tiny_config, spec, fragment):
    config = tiny_config(peers="mine,deepfm")
    with config.unlocked():
        config.models.mine = dict(model=spec)
    with pytest.raises(ValueError) as error:
        validate.validate(config)
    message = str(error.value)
    assert message.startswith("config.models.mine.model: ") and fragment in message
    assert "\n" not in message


def test_the_docs_worked_example_is_the_module_tested_here():
    with open(os.path.join(REPO, "docs", "models.md")) as f:
        section = f.read().split("## Adding a model", 1)[1].split("\n## ", 1)[0]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "class GatedMLP(EmbeddingModel)" in example
    assert example.strip() in USER_MODULE


def test_a_misspelled_hyperparameter_of_a_user_model_is_one_config_line(user_module_dir,
                                                                         tiny_config):
    config = tiny_config(peers="gated,deepfm")
    with config.unlocked():
        config.models.gated = dict(model="my_ctr_models:GatedMLP", hiden_units=8)
    with pytest.raises(ValueError, match=r"^config\.models\.gated: unknown hyperparameter\(s\) "
                                         r"for model 'my_ctr_models:GatedMLP'; valid: .*"
                                         r"'hidden_units'.* \(got \['hiden_units'\]\)$"):
        validate.validate(config)
