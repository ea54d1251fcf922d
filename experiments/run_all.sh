#!/usr/bin/env bash
# Runs every claim's runner on one dataset with a shared pretraining cache.
#   bash experiments/run_all.sh [ROOT] [SEEDS] [FLAGS...]
# e.g.  bash experiments/run_all.sh runs/paper 0,1,2 --config=experiments/configs/synthetic_cpu.py
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/paper}; SEEDS=${2:-0,1,2}
shift $(( $# < 2 ? $# : 2 ))
PY=${PY:-.venv/bin/python}
for entry in finetune scratch baselines variants cotrain_size companions precision; do
  echo "=== $entry ($(date)) ==="
  "$PY" -m "experiments.$entry" --workdir="$ROOT/$entry" --pretrain_root="$ROOT/pretrain" \
      --seeds="$SEEDS" "$@"
done
