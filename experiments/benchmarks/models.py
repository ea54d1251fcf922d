"""Benchmark (not a test): forward + backward examples/s of every model in the zoo.

Each model runs in its BARS Criteo_x4_001 configuration (``bars_hparams``) over a 1M-row
vocabulary split evenly across 39 fields, at batch 4096, in training mode (dropout and batch
norm active). One step = BCE loss + gradient w.r.t. all parameters (no optimizer update: that
belongs to the trainer's benchmark). Compilation and two warm-up steps are excluded; then
``--steps`` steps are timed. The last printed line is one JSON object keyed by model name:
``{"deepfm": {"examples_per_sec": ..., "params": ..., "step_ms": ...}, ...}``.

  python -m experiments.benchmarks.models                       # all models, 3 timed steps
  python -m experiments.benchmarks.models --quick               # 1 timed step each
  python -m experiments.benchmarks.models --models=deepfm,dcn   # a subset

On a 2-core CPU the 1000x5 / 2000x3 DNNs make a step take seconds (FiBiNET's 23712-wide DNN
input over ten); run with --quick or --models there.
"""

import json
import time
import types

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from mlctr.models import MODELS, create_model
from mlctr.configs.bars_table import bars_hparams

DEFAULT_MODELS = ('lr', 'fm', 'deepfm', 'dcn', 'dcnv2', 'ipnn', 'opnn', 'fibinet', 'wide_deep',
                  'xdeepfm', 'autoint')


def _hparams(name: str, dataset: str) -> dict:
  if name == 'opnn':  # BARS has no OPNN: IPNN's setting with outer products.
    return {**bars_hparams('pnn', dataset), 'product_type': 'outer'}
  return bars_hparams(name, dataset)


def _batches(rng, num_batches, batch_size, vocab_size, num_fields):
  """Global ids: field f draws uniformly from its own block of vocab_size // num_fields rows."""
  rows_per_field = vocab_size // num_fields
  offsets = np.arange(num_fields, dtype=np.int32) * rows_per_field
  out = []
  for _ in range(num_batches):
    ids = rng.integers(0, rows_per_field, size=(batch_size, num_fields), dtype=np.int32)
    labels = (rng.random(batch_size) < 0.25).astype(np.float32)
    out.append((jnp.asarray(ids + offsets), jnp.asarray(labels)))
  return out


def bench_model(name, args, batches):
  """Returns (examples/s, parameter count, step seconds) of one model."""
  model = create_model(name, vocab_size=args.vocab_size, num_fields=args.num_fields,
                       dtype=jnp.dtype(args.dtype), **_hparams(name, args.dataset))
  variables = jax.jit(lambda ids: model.init(
      {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, ids, train=False))(
          batches[0][0])
  params = variables['params']
  batch_stats = variables.get('batch_stats', {})
  num_params = int(sum(x.size for x in jax.tree_util.tree_leaves(params)))

  def loss_fn(params, batch_stats, ids, labels, rng):
    logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, ids,
                                  train=True, rngs={'dropout': rng}, mutable=['batch_stats'])
    loss = jnp.mean(jnp.maximum(logits, 0) - logits * labels
                    + jnp.log1p(jnp.exp(-jnp.abs(logits))))
    return loss, updates.get('batch_stats', batch_stats)

  @jax.jit
  def step(params, batch_stats, ids, labels, rng):
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, ids, labels, rng)
    return loss, new_stats, grads

  rng = jax.random.key(2)
  compiled = step.lower(params, batch_stats, *batches[0], rng).compile()
  for _ in range(2):  # warm-up: first-touch of the dense gradient buffers, thread pools
    jax.block_until_ready(compiled(params, batch_stats, *batches[0], rng))
  start = time.perf_counter()
  for i in range(args.steps):
    ids, labels = batches[i % len(batches)]
    out = compiled(params, batch_stats, ids, labels, jax.random.fold_in(rng, i))
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / args.steps
  return args.batch_size / seconds, num_params, seconds


FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined when run, not on import: the tests import some benchmarks' functions
  # beside other modules' flags.
  flags.DEFINE_string("models", ','.join(DEFAULT_MODELS),
                      f'comma-separated registry names; known: {sorted(MODELS)}')
  flags.DEFINE_integer("batch_size", 4096, 'examples per step')
  flags.DEFINE_integer("vocab_size", 1_000_000, 'embedding table rows')
  flags.DEFINE_integer("num_fields", 39, 'fields per example')
  flags.DEFINE_string("dataset", 'criteo_x4_001',
                      'BARS hyperparameter set (mlctr.configs.bars_table)')
  flags.DEFINE_integer("steps", 3, 'timed steps per model')
  flags.DEFINE_string("dtype", 'float32', 'compute dtype (e.g. bfloat16)')
  flags.DEFINE_bool("quick", False, 'one timed step per model')


def main(argv):
  del argv
  args = types.SimpleNamespace(**FLAGS.flag_values_dict())
  if args.quick:
    args.steps = 1
  names = [n.strip() for n in args.models.split(',') if n.strip()]
  for name in names:
    if name not in MODELS:
      raise app.UsageError(f'unknown model {name!r}; known: {sorted(MODELS)}')

  print(f'devices: {jax.devices()}; batch {args.batch_size}, vocab {args.vocab_size}, '
        f'{args.num_fields} fields, {args.dataset} BARS configs, dtype {args.dtype}, '
        f'{args.steps} timed step(s) after compile + 2 warm-up', flush=True)
  batches = _batches(np.random.default_rng(0), min(args.steps, 4), args.batch_size,
                     args.vocab_size, args.num_fields)
  results = {}
  for name in names:
    examples_per_sec, num_params, seconds = bench_model(name, args, batches)
    results[name] = {'examples_per_sec': round(examples_per_sec, 1), 'params': num_params,
                     'step_ms': round(seconds * 1e3, 1)}
    print(f'{name:10s} {examples_per_sec:12.1f} examples/s  {seconds * 1e3:10.1f} ms/step  '
          f'{num_params:12,d} params', flush=True)
  print(json.dumps(results))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
