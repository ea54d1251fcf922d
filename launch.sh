#!/usr/bin/env bash
# mlctr launcher. Every argument after the mode passes through as absl flags.
#
#   bash launch.sh [FLAGS...]            main job on the embedded synthetic default
#   bash launch.sh test [PYTEST ARGS]    install test dependencies, run the test suite
#   bash launch.sh multiprocess N [FLAGS...]  N jax.distributed processes on this machine (CPU)
#   bash launch.sh slurm [FLAGS...]      inside an sbatch allocation: one process per task (srun)
#   bash launch.sh tpu [FLAGS...]        on every worker of a Cloud TPU VM slice
#
# Environment: MLCTR_VENV (default .venv), PYTHON (default python3),
# MLCTR_NO_VENV=1 to use the current Python as is (clusters with a prepared env).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${MLCTR_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

setup_env() {
  # Creates or reuses the virtual environment; reinstalls when setup.py changes.
  local extras=$1
  if [[ "${MLCTR_NO_VENV:-0}" == "1" ]]; then PY=$PYTHON; return; fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[launch] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  PY=$VENV/bin/python
  local stamp_file="$VENV/.mlctr-install-$extras"
  local stamp
  stamp=$(cat setup.py | sha256sum | cut -c1-16)
  if [[ ! -f "$stamp_file" || "$(cat "$stamp_file")" != "$stamp" ]]; then
    echo "[launch] installing mlctr[$extras] into $VENV (first run: a few minutes)"
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q -e ".[$extras]"
    echo "$stamp" > "$stamp_file"
  fi
}

has_flag() {  # has_flag NAME ARGS... : is --NAME or --NAME=... among ARGS?
  local name=$1; shift
  for a in "$@"; do [[ "$a" == "--$name" || "$a" == --$name=* ]] && return 0; done
  return 1
}

run_main() {
  local args=("$@")
  has_flag config "${args[@]+"${args[@]}"}" || args=("--config=mlctr/configs/default.py" "${args[@]+"${args[@]}"}")
  has_flag workdir "${args[@]+"${args[@]}"}" || args=("--workdir=runs/default" "${args[@]}")
  "$PY" -m mlctr.main "${args[@]}"
}

MODE=${1:-local}
case "$MODE" in
  test)
    shift
    setup_env test
    "$PY" -m pytest -q tests "$@"
    ;;
  multiprocess)
    shift
    NUM=${1:?usage: bash launch.sh multiprocess N [FLAGS...]}; shift
    setup_env plots
    PORT=${MLCTR_PORT:-$((20000 + RANDOM % 20000))}
    pids=()
    for ((i = 0; i < NUM; i++)); do
      MLCTR_COORDINATOR=localhost:$PORT MLCTR_NUM_PROCESSES=$NUM MLCTR_PROCESS_ID=$i \
        JAX_PLATFORMS=cpu run_main "$@" &
      pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    exit $status
    ;;
  slurm)
    shift
    setup_env plots
    # One process per SLURM task; JAX reads SLURM_* to find the coordinator,
    # the process count and this process's id.
    export MLCTR_DISTRIBUTED=auto
    if [[ -n "${SLURM_STEP_ID:-}" ]]; then run_main "$@"; else
      srun --kill-on-bad-exit=1 bash "$ROOT/launch.sh" slurm "$@"; fi
    ;;
  tpu)
    shift
    setup_env plots
    export MLCTR_DISTRIBUTED=auto  # Cloud TPU VM: JAX discovers the slice's workers
    run_main "$@"
    ;;
  local|--*)
    [[ "$MODE" == "local" ]] && shift
    setup_env plots
    run_main "$@"
    ;;
  *)
    echo "unknown mode '$MODE' (expected: local, test, multiprocess, slurm, tpu, or absl flags)" >&2
    exit 2
    ;;
esac
