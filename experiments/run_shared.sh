#!/usr/bin/env bash
# The four claims on the real rows in ../shared/data, Criteo or Avazu, in passes of growing
# seed lists: every pass reuses the finished runs of the one before (experiments/paper.py
# caches them), so the tables exist early and grow to the final seed count.
#   bash experiments/run_shared.sh criteo|avazu [ROOT] [SEED_LISTS...]
# e.g.  bash experiments/run_shared.sh criteo runs/shared_criteo 0,1,2,3,4 0,1,2,3,4,5,6,7,8,9
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${1:?usage: bash experiments/run_shared.sh criteo|avazu [ROOT] [SEED_LISTS...]}
ROOT=${2:-runs/shared_$NAME}
shift $(( $# < 2 ? $# : 2 ))
PASSES=("$@"); [[ ${#PASSES[@]} -gt 0 ]] || PASSES=(0,1,2,3,4,5,6,7,8,9)
PY=${PY:-.venv/bin/python}
COMMON=(--config=experiments/configs/shared_$NAME.py --dataset=shared_$NAME
        --pretrain_root="$ROOT/pretrain")
for seeds in "${PASSES[@]}"; do
  for entry in finetune scratch cotrain_size companions; do
    extra=()
    [[ $entry == cotrain_size ]] && extra=(--order=deepfm,dcn,ipnn,fibinet)
    [[ $entry == companions ]] && extra=(--fractions=0.25,1.0)
    echo "=== $NAME $entry seeds $seeds ($(date -u +%H:%M:%S)) ==="
    # A failed entry does not stop the others; the next pass retries it from its cache.
    "$PY" -m "experiments.$entry" "${COMMON[@]}" --workdir="$ROOT/$entry" --seeds="$seeds" \
        "${extra[@]}" || echo "=== $NAME $entry seeds $seeds failed (exit $?) ==="
  done
done
