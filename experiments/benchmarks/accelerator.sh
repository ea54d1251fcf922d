#!/usr/bin/env bash
# The performance benchmarks on a GPU or TPU, in one go: the commands behind the README's
# accelerator table. Each benchmark gets a time limit (a share of BUDGET_S, default 540 s,
# counted from the start) so that one slow or failing part leaves the others their turn;
# its output goes to OUTDIR/<name>.log and its JSON line to OUTDIR/results.jsonl.
#
#   bash experiments/benchmarks/accelerator.sh [OUTDIR]        # default runs/bench/accelerator
#
# Environment: PYTHON (default python3; needs jax with a GPU/TPU plugin, flax, optax),
# TORCH_PYTHON (a Python with torch and deepctr-torch for bench_vs_torch; default $PYTHON),
# BUDGET_S. The timings wait for each step to finish (block_until_ready / cuda.synchronize).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/bench/accelerator}
PY=${PYTHON:-python3}
TORCH_PY=${TORCH_PYTHON:-$(command -v "$PY")}
BUDGET=${BUDGET_S:-540}
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

part() {  # part NAME SHARE_S COMMAND...: run with min(SHARE_S, time left) as its limit
  local name=$1 share=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  local limit=$(( share < left ? share : left ))
  if (( limit < 20 )); then echo "== $name: skipped (${left} s of the budget left)"; return; fi
  echo "== $name (limit ${limit} s): $*"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -E "^(WARNING|I[0-9]{4}|W[0-9]{4})" "$OUT/$name.log" | tail -n 40
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  local json
  json=$(grep '^{' "$OUT/$name.log" | tail -n 1)
  [[ -n "$json" ]] && echo "{\"benchmark\": \"$name\", \"result\": $json}" >> "$OUT/results.jsonl"
}

"$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"
part bench_embedding 170 "$PY" -m experiments.benchmarks.embedding --rounds=4 --steps=4
part bench_step 110 "$PY" -m experiments.benchmarks.step --rounds=6 --steps=4
part bench_step_bf16 110 "$PY" -m experiments.benchmarks.step --rounds=6 --steps=4 --compute_dtype=bfloat16
part bench_vs_torch 130 "$PY" -m experiments.benchmarks.vs_torch --rounds=4 --steps=4 \
  --torch_python="$TORCH_PY"
echo "== total $(( $(date +%s) - START )) s; JSON lines in $OUT/results.jsonl"
