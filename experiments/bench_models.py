"""Benchmark (not a test): forward + backward examples/s of every model in the zoo.

Each model runs in its BARS Criteo_x4_001 configuration (``bars_hparams``) over a 1M-row
vocabulary split evenly across 39 fields, at batch 4096, in training mode (dropout and batch
norm active). One step = BCE loss + gradient w.r.t. all parameters (no optimizer update: that
belongs to the trainer's benchmark). Compilation and two warm-up steps are excluded; then
``--steps`` steps are timed. The last printed line is one JSON object keyed by model name:
``{"deepfm": {"examples_per_sec": ..., "params": ..., "step_ms": ...}, ...}``.

  python experiments/bench_models.py                       # all models, 3 timed steps
  python experiments/bench_models.py --quick               # 1 timed step each
  python experiments/bench_models.py --models=deepfm,dcn   # a subset

On a 2-core CPU the 1000x5 / 2000x3 DNNs make a step take seconds (FiBiNET's 23712-wide DNN
input over ten); run with --quick or --models there.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from mlctr.models import MODELS, create_model
from mlctr.configs.bars_table import bars_hparams

DEFAULT_MODELS = ('lr', 'fm', 'deepfm', 'dcn', 'dcnv2', 'ipnn', 'opnn', 'fibinet', 'wide_deep',
                  'xdeepfm', 'autoint', 'masknet', 'onn', 'eulernet')


def _hparams(name: str, dataset: str) -> dict:
  if name == 'opnn':  # BARS has no OPNN: IPNN's setting with outer products.
    return {**bars_hparams('pnn', dataset), 'product_type': 'outer'}
  if name == 'eulernet':  # BARS has no EulerNet: the class defaults, the authors' Criteo run.
    return {}
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default=','.join(DEFAULT_MODELS),
                      help=f'comma-separated registry names; known: {sorted(MODELS)}')
  parser.add_argument('--batch_size', type=int, default=4096)
  parser.add_argument('--vocab_size', type=int, default=1_000_000)
  parser.add_argument('--num_fields', type=int, default=39)
  parser.add_argument('--dataset', default='criteo_x4_001')
  parser.add_argument('--steps', type=int, default=3, help='timed steps per model')
  parser.add_argument('--dtype', default='float32', help='compute dtype (e.g. bfloat16)')
  parser.add_argument('--quick', action='store_true', help='one timed step per model')
  args = parser.parse_args()
  if args.quick:
    args.steps = 1
  names = [n.strip() for n in args.models.split(',') if n.strip()]
  for name in names:
    if name not in MODELS:
      parser.error(f'unknown model {name!r}; known: {sorted(MODELS)}')

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


if __name__ == '__main__':
  main()
